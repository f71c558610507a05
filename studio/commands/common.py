"""What the commands share: the base arguments (--base/--device/--precision) and the stop flag."""

from __future__ import annotations


def add_base_arguments(parser, precision_help: str = "weights' precision for sampling (default: fp32)") -> None:
    parser.add_argument("--base", default=None,
                        help="diffusers StableDiffusionPipeline folder or hub id (default: the embedded studio-mini-2)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run (default: auto)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"],
                        help=precision_help)
    parser.set_defaults(preflight=check_base)


def check_base(args) -> None:
    """The CLI's preflight (run before torch is imported): --base names a pipeline folder or a hub id."""
    from generators.base_source import base_source

    base_source(args.base)


class StopFlag:
    """should_stop() for the engines: true after Ctrl-C or SIGTERM, so the task checkpoints and stops cleanly."""

    def __init__(self):
        import signal

        self.stopped = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.stopped = True

    def __call__(self) -> bool:
        return self.stopped


def add_set_argument(parser, config_name: str, example: str) -> None:
    """`--set KEY=VALUE` (repeatable) over a command's config dataclass; applied after the other flags."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"set any {config_name} field (repeatable; VALUE is JSON, or a plain string; "
                             f"applied after the other options), e.g. --set {example}")


def parse_set(pairs: list[str], config_cls, key_prefix: str = "") -> dict:
    """`--set KEY=VALUE` pairs as field values of config_cls (a bad key is a UserError naming the known ones)."""
    from generators.config import parse_overrides

    return parse_overrides(pairs, config_cls, key_prefix)
