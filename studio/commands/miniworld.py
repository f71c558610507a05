"""`studio miniworld render|styles`: the procedural mini world on disk."""

from __future__ import annotations

from pathlib import Path

from generators.errors import UserError
from studio.progress import TqdmProgress


def register(sub) -> None:
    parser = sub.add_parser("miniworld", help="render the procedural mini world (images, captions, attributes)")
    mw_sub = parser.add_subparsers(dest="miniworld_command", metavar="ACTION", required=True)

    render = mw_sub.add_parser("render", help="write PNGs with .txt captions and a metadata.jsonl")
    render.add_argument("--out", type=Path, required=True, help="new (or empty) folder to write into")
    render.add_argument("--n", type=int, required=True, help="number of images (per style with --as-style-folders)")
    render.add_argument("--seed", type=int, default=0, help="global seed; the same seed gives identical files")
    render.add_argument("--style", default="plain", help="reference style to apply (see `studio miniworld styles`)")
    render.add_argument("--kinds", default=None, help="comma-separated object kinds to draw (default: all)")
    render.add_argument("--size", type=int, default=64, help="image side in pixels, a multiple of 8 up to 512")
    render.add_argument("--as-style-folders", action="store_true",
                        help="one folder per reference style (the layout `studio ingest` reads)")
    render.set_defaults(run=run_render)

    styles = mw_sub.add_parser("styles", help="list the reference style names")
    styles.set_defaults(run=run_styles)


def run_render(args) -> int:
    from generators import miniworld
    from generators.run import Run

    if args.n < 1:
        raise UserError(f"--n must be at least 1, got {args.n}")
    kinds = miniworld.parse_kinds(args.kinds)
    if args.as_style_folders:
        if args.style != "plain":
            raise UserError("--style and --as-style-folders exclude each other (style folders hold every style)")
        with TqdmProgress("render") as progress:
            miniworld.write_style_folders(args.out, args.n, args.seed, kinds, args.size, Run(progress=progress))
    else:
        with TqdmProgress("render") as progress:
            miniworld.write_images(args.out, args.n, args.seed, args.style, kinds, args.size, Run(progress=progress))
    print(f"wrote {args.out}")
    return 0


def run_styles(args) -> int:
    from styles.reference import REFERENCE_STYLES, describe_style

    for name in REFERENCE_STYLES:
        print(f"{name}\t{describe_style(name)}")
    return 0
