"""Arguments shared by the commands that use a text-to-image base."""

from __future__ import annotations


def add_base_arguments(parser, precision_help: str = "weights' precision for sampling (default: fp32)") -> None:
    parser.add_argument("--base", default=None,
                        help="diffusers StableDiffusionPipeline folder or hub id (default: the embedded studio-mini)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run (default: auto)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"],
                        help=precision_help)
    parser.set_defaults(preflight=check_base)


def check_base(args) -> None:
    """The CLI's preflight (run before torch is imported): --base names a pipeline folder or a hub id."""
    from generators.base_source import base_source

    base_source(args.base)
