"""Each module here adds one top-level command with `register(subparsers)`."""

from studio.commands import evaluate, generate, miniworld, museum, pretrain

COMMANDS = (miniworld, generate, museum, pretrain, evaluate)
