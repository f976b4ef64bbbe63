"""OpenVINO IR for openvino-genai: `optimum-cli export openvino` (optimum-intel) with NNCF weight compression,
plus tokenizer and detokenizer IR from openvino-tokenizers, in one folder `openvino_genai.LLMPipeline` opens.

    python -m pipeline.targets.openvino --checkpoint artifacts/fixture-phi-3-mini-4k/checkpoint \
        --recipe fixture-phi-3-mini-4k --artifact int4 --out artifacts/fixture-phi-3-mini-4k/openvino/int4

An artifact's `options` in recipes/targets.yaml are optimum-cli's own flags without the dashes
(`weight-format: int4`, `group-size: 128`, `awq: true` ...); the command run is printed first.
"""
import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from pipeline import recipes
from pipeline.atomic import atomic_dir
from pipeline.cli import run_cli

TASK = "text-generation-with-past"  # optimum-cli cannot infer the task from a local folder


def flags(options: dict) -> list[str]:
    """{'awq': True, 'group-size': 128, 'sym': False} -> ['--awq', '--group-size', '128']."""
    args = []
    for name, value in options.items():
        if value is True:
            args.append(f"--{name}")
        elif value is not False:
            args += [f"--{name}", str(value)]
    return args


def command(checkpoint: Path, options: dict, out: Path) -> list[str]:
    cli = Path(sys.executable).with_name("optimum-cli")
    return [str(cli), "export", "openvino", "--model", str(checkpoint), "--task", TASK, *flags(options), str(out)]


def build(checkpoint: Path, recipe: str, artifact: str, out: Path):
    spec = recipes.artifact(recipes.load_supported(recipe), "openvino", artifact)
    with atomic_dir(out) as scratch:
        args = command(checkpoint, spec["options"], scratch)
        print(shlex.join(args), flush=True)
        subprocess.run(args, check=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--recipe", required=True, help="model recipe name (recipes/models/<name>.yaml)")
    parser.add_argument("--artifact", required=True, help="artifact name under targets.openvino.artifacts")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    build(args.checkpoint, args.recipe, args.artifact, args.out)


if __name__ == "__main__":
    run_cli(main)
