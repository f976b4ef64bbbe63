"""The one way every stage's CLI reports a user error: one line, the fix in it, exit status 2; and the arguments
every per-artifact stage takes."""
import argparse
import sys
from pathlib import Path

from pipeline.checkpoint import CheckpointError
from pipeline.recipes import RecipeError

USER_ERRORS = (CheckpointError, RecipeError)


def run_cli(main):
    try:
        main()
    except USER_ERRORS as error:
        print(f"phi-forge: error: {error}", file=sys.stderr)
        sys.exit(2)


def artifact_parser(description: str) -> argparse.ArgumentParser:
    """--model, --target, --artifact name one artifact (artifacts/<model>/<target>/<artifact>/); --out what to write."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="the artifacts folder")
    parser.add_argument("--out", required=True, type=Path)
    return parser
