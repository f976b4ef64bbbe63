"""phi-forge's MLX build against mlx_lm.convert run by hand on the same checkpoint: wall time and peak RSS.

    .envs/mlx/bin/python -m pipeline.targets.mlx.bench [--model fixture-phi-3-mini-4k] [--artifacts 4bit 8bit]

Both run in the mlx environment; by hand is `mlx_lm convert -q` with the artifact's bits and group size.
"""
import argparse
import sys
import tempfile
from pathlib import Path

from pipeline import recipes
from pipeline.bench import build_command, measure, print_table

ROOT = Path(__file__).resolve().parents[3]
# Artifact option -> mlx_lm convert flag.
FLAGS = {"bits": "--q-bits", "group_size": "--q-group-size", "mode": "--q-mode",
         "quant_predicate": "--quant-predicate", "dtype": "--dtype"}


def by_hand(checkpoint: Path, out: Path, opts: dict) -> list[str]:
    flags = [part for key, value in opts.items() if key in FLAGS for part in (FLAGS[key], str(value))]
    return [sys.executable, "-m", "mlx_lm", "convert", "--hf-path", checkpoint, "--mlx-path", out, "-q", *flags]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fixture-phi-3-mini-4k")
    parser.add_argument("--artifacts", nargs="+", default=["4bit", "8bit"])
    args = parser.parse_args(argv)
    checkpoint = ROOT / "artifacts" / args.model / "checkpoint"
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for artifact in args.artifacts:
            options = recipes.artifact(recipes.load_supported(args.model), "mlx", artifact)["options"]
            phi_forge = measure(build_command("mlx", artifact, args.model, checkpoint,
                                              Path(scratch) / f"ours-{artifact}"), cwd=ROOT)
            upstream = measure(by_hand(checkpoint, Path(scratch) / f"hand-{artifact}", options))
            rows.append((f"{args.model} {artifact}", phi_forge, upstream))
    print_table(rows)


if __name__ == "__main__":
    main()
