"""Each module here adds one top-level command with `register(subparsers)`."""

from studio.commands import miniworld

COMMANDS = (miniworld,)
