"""The one way every stage's CLI reports a user error: one line, the fix in it, exit status 2."""
import sys

from pipeline.checkpoint import CheckpointError
from pipeline.recipes import RecipeError


class PushError(ValueError):
    """A push refused (pipeline.push). Here, not there: this module cannot import the modules that import it."""


USER_ERRORS = (CheckpointError, RecipeError, PushError)


def run_cli(main):
    try:
        main()
    except USER_ERRORS as error:
        print(f"phi-forge: error: {error}", file=sys.stderr)
        sys.exit(2)
