"""The `studio` command line: one sub-command per module under studio/commands.

Errors a user can fix (bad paths, bad arguments, bad files) surface as one line on stderr and
exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from studio.commands import COMMANDS

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="studio",
        description="Studio: teach text-to-image and GAN models new things, one after another.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except USER_ERRORS as err:
        print(f"studio: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("studio: interrupted", file=sys.stderr)
        return 130
