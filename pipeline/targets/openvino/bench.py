"""Export time and peak memory: phi-forge's OpenVINO build against `optimum-cli export openvino` run by hand
with the same flags, on the same checkpoint.

    python -m pipeline.targets.openvino.bench [--model fixture-phi-3-mini-4k] [--artifacts int4 int8]
"""
import argparse
import tempfile
from pathlib import Path

from pipeline import recipes
from pipeline.bench import build_command, measure, print_table
from pipeline.targets.openvino.build import TASK, flags

ROOT = Path(__file__).resolve().parents[3]
ENV = ROOT / ".envs" / "openvino" / "bin"


def bench(model: str, artifact: str, scratch: Path) -> tuple[str, dict, dict]:
    checkpoint = ROOT / "artifacts" / model / "checkpoint"
    options = recipes.artifact(recipes.load_supported(model), "openvino", artifact)["options"]
    ours = measure([ENV / "python", *build_command("openvino", artifact, model, checkpoint, scratch / "ours")[1:]],
                   cwd=ROOT)
    by_hand = measure([ENV / "optimum-cli", "export", "openvino", "--model", checkpoint, "--task", TASK,
                       *flags(options), scratch / "by-hand"])
    return f"{model} {artifact}", ours, by_hand


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fixture-phi-3-mini-4k")
    parser.add_argument("--artifacts", nargs="+", default=["int4", "int8"])
    args = parser.parse_args(argv)
    rows = []
    for artifact in args.artifacts:
        with tempfile.TemporaryDirectory() as scratch:
            rows.append(bench(args.model, artifact, Path(scratch)))
    print_table(rows)


if __name__ == "__main__":
    main()
