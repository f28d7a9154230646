"""Errors a user can fix, reported as one line on stderr instead of a traceback."""

import sys
from typing import NoReturn


class UserError(Exception):
    """Bad input or an unusable environment: the message is the whole report."""


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)
