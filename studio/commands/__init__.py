"""Each module here adds one top-level command with `register(subparsers)`."""

from studio.commands import evaluate, gan, generate, miniworld, museum, pretrain, serve, synth

COMMANDS = (serve, miniworld, generate, museum, gan, synth, pretrain, evaluate)
