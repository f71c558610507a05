"""The `studio` command line: one sub-command per module under studio/commands.

Errors a user can fix (generators.errors.UserError: bad arguments, bad or foreign files, refused
settings; and the file-system errors a wrong path raises) surface as one line on stderr and exit
status 2; anything else, a ValueError from inside torch included, is a bug and keeps its
traceback. Every command runs under Studio's thread policy (studio/threads.py), set before any
heavy torch work.
"""

from __future__ import annotations

import argparse
import os
import sys

from generators.errors import UserError
from studio import threads
from studio.commands import COMMANDS

USER_ERRORS = (UserError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="studio",
        description="Studio: teach text-to-image and GAN models new things, one after another.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
    return parser


def _quiet_libraries() -> None:
    """Library chatter (load bars, deprecation notes) would bury our own progress and errors."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # Cheap checks of the arguments first, so that a bad path fails in a moment, not after
        # torch and diffusers have been imported.
        if getattr(args, "preflight", None):
            args.preflight(args)
        threads.apply()
        return args.run(args) or 0
    except USER_ERRORS as err:
        print(f"studio: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("studio: interrupted", file=sys.stderr)
        return 130
