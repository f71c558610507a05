"""`studio ingest`, `studio caption`, `studio styles`, `studio export`: the museum of styles."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from generators.errors import UserError
from generators.museum.config import MuseumConfig
from studio.commands.common import StopFlag, add_base_arguments, add_set_argument, parse_set
from studio.progress import TqdmProgress


def add_museum_argument(parser) -> None:
    parser.add_argument("--museum", type=Path, default=None,
                        help="museum folder (default: $STUDIO_HOME/museum, STUDIO_HOME defaulting to ~/.studio)")


def museum_dir(args) -> Path:
    from styles.home import default_museum_dir

    return args.museum or default_museum_dir()


def register(sub) -> None:
    p = sub.add_parser("ingest", help="learn every style folder under DIR into the museum, in order")
    p.add_argument("dir", type=Path, help="folder of style folders (order: sorted, or DIR/order.txt)")
    add_museum_argument(p)
    p.add_argument("--steps", type=int, default=None, help=f"training steps per style (default {MuseumConfig.steps}, or style.toml's)")
    p.add_argument("--rank", type=int, default=None, help=f"shared LoRA rank (default {MuseumConfig.rank}; fixed by the museum's first style)")
    p.add_argument("--checkpoint-every", type=int, default=None, help=f"steps between resumable checkpoints (default {MuseumConfig.checkpoint_every})")
    p.add_argument("--noise-offset", type=float, default=None,
                   help=f"kohya's noise_offset for the style images (default {MuseumConfig.noise_offset}, chosen on studio-mini 2; 0: off, "
                        "better on the first studio-mini; docs/lab/2026-12-notebook.md)")
    p.add_argument("--num-vectors", type=int, default=None,
                   help=f"vectors of each new style's token (textual inversion's num_vectors; default {MuseumConfig.num_vectors}): the prompt "
                        "still says the token, which then takes this many positions")
    p.add_argument("--captioner", default=None,
                   help="who captions images without a caption file: auto (default: the mini world's evaluator on "
                        "an embedded base, else none), mini-world, none (train as 'a picture'), or a BLIP/GIT "
                        "folder or hub id (transformers, safetensors)")
    p.add_argument("--new-version", action="store_true",
                   help="learn a style whose name exists with different images as <name>-v2 beside the original")
    p.add_argument("--no-sdl", action="store_true", help="switch off the style distillation loss (ablation)")
    p.add_argument("--weight-reg", action="store_true",
                   help="switch on the weight regularizer (MuseumMaker's weight aspect; off by default: on studio-mini 2 it "
                        "held new styles back without lowering forgetting)")
    p.add_argument("--no-feature-reg", action="store_true", help="switch off the feature regularizer (ablation)")
    p.add_argument("--no-preserve-base", action="store_true",
                   help="leave the base's plain prompts out of the feature regularizer (ablation: the style then leaks into every prompt)")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute UNet activations in the backward pass: less memory, about a third more time")
    add_set_argument(p, "MuseumConfig", "lambda_sdl=0.1 --set lora_lr=5e-4")
    add_base_arguments(p, precision_help="autocast precision of training (the LoRA and tokens stay fp32; default: fp32)")
    p.set_defaults(run=run_ingest)

    c = sub.add_parser("caption", help="write the captions ingestion would make as .txt files beside images that have none")
    c.add_argument("dir", type=Path, help="a style folder, or a folder of style folders")
    c.add_argument("--captioner", default="auto",
                   help="auto (default: the mini world's evaluator on an embedded base), mini-world, or a BLIP/GIT "
                        "folder or hub id (transformers, safetensors)")
    add_base_arguments(c)
    c.set_defaults(run=run_caption)

    s = sub.add_parser("styles", help="list the museum's styles")
    add_museum_argument(s)
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(run=run_styles)

    e = sub.add_parser("export", help="export a style (shared LoRA + its token) for diffusers or kohya tools")
    e.add_argument("name", help="style name")
    add_museum_argument(e)
    e.add_argument("--format", required=True, choices=["diffusers", "kohya"])
    e.add_argument("--out", type=Path, required=True, help="new folder to write")
    e.set_defaults(run=run_export)


def _overrides(args) -> dict:
    """The MuseumConfig fields this command line sets (flags given, then --set); the rest comes from
    the museum's policy (ingest.task_config)."""
    given = {"steps": args.steps, "rank": args.rank, "checkpoint_every": args.checkpoint_every,
             "noise_offset": args.noise_offset, "num_vectors": args.num_vectors, "captioner": args.captioner, "precision": args.precision}
    out = {k: v for k, v in given.items() if v is not None}
    for flag, key in (("no_sdl", "use_sdl"), ("no_feature_reg", "use_feature_reg"), ("no_preserve_base", "preserve_base")):
        if getattr(args, flag):
            out[key] = False
    if args.weight_reg:
        out["use_weight_reg"] = True
    if args.gradient_checkpointing:
        out["gradient_checkpointing"] = True
    out.update(parse_set(args.set, MuseumConfig))
    MuseumConfig(**out)  # a bad value fails now, before any work
    return out


def run_ingest(args) -> int:
    from generators import diffusion
    from generators.museum.ingest import ingest, plan, plan_lines, task_report, todo
    from generators.run import Run
    from styles.museum import Museum

    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be at least 1, got {args.steps}")
    if args.noise_offset is not None and args.noise_offset < 0:
        raise UserError(f"--noise-offset must be 0 (off) or more, got {args.noise_offset}")
    overrides = _overrides(args)
    root = museum_dir(args)
    base = diffusion.base_name(args.base)
    museum = Museum.open(root, base=base, create=True)
    items = plan(args.dir, museum, diffusion.resolution_of(args.base), args.new_version, overrides)

    print(f"plan for {args.dir} -> museum {root} (base {base}):")
    for line in plan_lines(items):
        print(line)
    tasks = todo(items)

    evaluator = None
    if tasks:
        try:
            from generators.evaluators import load_evaluator

            evaluator = load_evaluator(device="cpu")
        except FileNotFoundError:
            print("(no evaluators under assets/: style scores are skipped)", file=sys.stderr)

    with TqdmProgress(f"{len(tasks)} styles") as progress:
        manifests = ingest(museum, items, args.base, args.device, Run(progress=progress, should_stop=StopFlag()),
                           evaluator)
    if manifests and manifests[-1].get("stopped"):
        m = manifests[-1]
        print(f"stopped during {m['name']} at step {m['result']['steps']}: the museum holds the styles "
              "learnt before it; run the same command again to resume", file=sys.stderr)
        return 130

    print("report:")
    for it in items:
        if it.action in ("skip", "refuse", "invalid"):
            print(f"  {it.name}: {it.action} - {it.reason}")
    for m in manifests:
        print("\n".join(task_report(m)))
    failed = [it for it in items if it.action in ("refuse", "invalid")]
    if len(failed) == 1:
        it = failed[0]
        raise UserError(f"{it.folder} not learnt: {it.reason}" + (
            "; fix or remove the folder (the plan above says why each file was rejected) and run again"
            if it.action == "invalid" else ""))
    if failed:
        raise UserError(f"{len(failed)} style folders not learnt ({', '.join(str(it.folder) for it in failed)}); "
                        "fix them as the report above says, or remove them, and run again")
    return 0


def run_caption(args) -> int:
    from generators import diffusion
    from generators.museum.ingest import write_captions

    rows = write_captions(args.dir, args.captioner, args.base, str(diffusion.resolve_device(args.device)),
                          diffusion.resolution_of(args.base))
    written = [r for r in rows if r[1]]
    for path, caption, why in rows:
        print(f"  {path}: {caption}" if caption else f"  {path}: not captioned ({why})")
    print(f"wrote {len(written)} caption files; images that had one were left as they were")
    return 0


def run_styles(args) -> int:
    from generators.museum.scores import score_text, style_metrics
    from styles.museum import Museum

    museum = Museum.open(museum_dir(args))
    rows = [s.__dict__ for s in museum.styles]
    if args.json:
        print(json.dumps({"museum": str(museum.root), "base": museum.base, "styles": rows}, indent=2))
        return 0
    print(f"museum {museum.root} on base {museum.base}: {len(rows)} styles")
    for s in museum.styles:
        print(f"  {s.name:24s} {s.token:26s} task {s.task:3d}  {s.images:3d} images  {s.created}  "
              f"{score_text(style_metrics(museum, s))}")
    return 0


def run_export(args) -> int:
    from generators.museum.export import export_style
    from styles.museum import Museum

    museum = Museum.open(museum_dir(args))
    museum.style(args.name)
    out = export_style(museum, args.name, args.format, args.out)
    print(f"wrote {out}")
    return 0
