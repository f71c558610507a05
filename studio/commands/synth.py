"""`studio synth fit` and `studio synth export`: synthetic training sets from a few real images per class.

    studio synth fit DIR --category WORD --work W [--base B] [--restart]
    studio synth export --work W --out OUT --per-class N [--seed S] [--context bank|same-class|none] [--zip]

Many processes: `accelerate launch --num_processes K -m studio synth export ...` splits the
images between them and writes the same files as one process.
"""

from __future__ import annotations

import sys
from pathlib import Path

from generators.errors import UserError
from studio.commands.common import StopFlag, add_set_argument, check_base, parse_set
from studio.progress import TqdmProgress


def register(sub) -> None:
    p = sub.add_parser("synth", help="a large synthetic training set from a few real images per class (BOB)")
    s = p.add_subparsers(dest="synth_command", metavar="STEP", required=True)

    f = s.add_parser("fit", help="extract background/pose per real image and fit one LoRA for all classes")
    f.add_argument("dir", type=Path, help="folder of class folders with a few real images each (DIR/<class>/<image>)")
    f.add_argument("--category", required=True, help="the super-category word (e.g. bird, aircraft); extractors see only this")
    f.add_argument("--work", type=Path, required=True, help="work folder: caption bank, LoRA, checkpoints")
    f.add_argument("--base", default=None,
                   help="base: an SD 1.x/2.x or SDXL diffusers pipeline folder, a single .safetensors checkpoint "
                        "(configs in <stem>.config/ beside it), or a hub id (default: the embedded studio-mini-2; studio-mini names the first embedded base)")
    f.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run (default: auto)")
    f.add_argument("--extractor", default="auto", choices=["auto", "sidecar", "miniworld", "captioner"],
                   help="attribute source (default auto: sidecars where present, else --captioner, else the mini-world evaluators)")
    f.add_argument("--captioner", default=None, metavar="ID_OR_PATH",
                   help="vision-language model (transformers image-text-to-text) asked about the category only")
    f.add_argument("--steps", type=int, default=None, help="training steps (default 400)")
    f.add_argument("--batch-size", type=int, default=None, help="images per step (default 8)")
    f.add_argument("--rank", type=int, default=None, help="LoRA rank = alpha (default 16)")
    f.add_argument("--lr", type=float, default=None, help="peak learning rate (default 5e-4, warmup then cosine)")
    f.add_argument("--seed", type=int, default=0, help="training seed")
    f.add_argument("--no-text-encoder-lora", action="store_true", help="LoRA on the UNet only")
    f.add_argument("--class-words", default="plain", choices=["plain", "learnt"],
                   help="class names in prompts as plain words (default) or a learnt token per class (<name>)")
    f.add_argument("--no-context", action="store_true",
                   help="DataDream baseline: train the class prompt alone, without background and pose")
    f.add_argument("--extract-only", action="store_true", help="write W/bank.jsonl and stop (edit it, then fit)")
    f.add_argument("--restart", action="store_true",
                   help="start over: discard W's fit and checkpoint and train with these settings (the caption bank is "
                        "kept unless --category, --base, --extractor or --captioner changed); without it, a fit in W "
                        "resumes, and changed training settings are refused")
    add_set_argument(f, "FitConfig", "context_dropout=0.2 --set warmup_steps=20")
    f.set_defaults(run=run_fit, preflight=check_base)

    e = s.add_parser("export", help="sample the fitted LoRA into an image-classification dataset")
    e.add_argument("--work", type=Path, required=True, help="work folder of `studio synth fit`")
    e.add_argument("--out", type=Path, required=True, help="dataset folder (new, or an unfinished export to continue)")
    e.add_argument("--per-class", type=int, required=True, help="images per class")
    e.add_argument("--seed", type=int, default=0, help="global seed; image seeds derive from (seed, class, index)")
    e.add_argument("--context", default="bank", choices=["bank", "same-class", "none"],
                   help="bank: background/pose drawn from all classes' real images (default); same-class: from the "
                        "class's own; none: class prompt only")
    e.add_argument("--steps", type=int, default=25, help="sampling steps (default 25)")
    e.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance (default 2.0)")
    e.add_argument("--negative", default="", help="negative prompt")
    e.add_argument("--batch-size", type=int, default=8, help="images per sampling batch (part of the seed recipe)")
    e.add_argument("--size", type=int, default=None, help="image side in pixels (default: the base's resolution)")
    e.add_argument("--zip", action="store_true", help="also write OUT.zip beside OUT")
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run (default: auto)")
    e.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"], help="weights' precision for sampling")
    e.set_defaults(run=run_export)


def run_fit(args) -> int:
    from dataclasses import replace

    from generators.run import Run
    from generators.synthetic.extract import BANK_FILE
    from generators.synthetic.fit import FitConfig, fit, resolve_base

    cfg = FitConfig(category=args.category.strip(), base=resolve_base(args.base), seed=args.seed,
                    extractor=args.extractor, captioner=args.captioner,
                    text_encoder_lora=not args.no_text_encoder_lora, use_context=not args.no_context,
                    class_words=args.class_words)
    if args.extractor == "captioner" and not args.captioner:
        raise UserError("--extractor captioner needs --captioner ID_OR_PATH")
    for name in ("steps", "batch_size", "lr"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    if args.rank is not None:
        cfg.rank, cfg.alpha = args.rank, float(args.rank)
    cfg = replace(cfg, **parse_set(args.set, FitConfig))
    with TqdmProgress("synth fit") as progress:
        run = Run(progress=progress, should_stop=StopFlag(), log=_log)
        result = fit(args.dir, args.work, cfg, device=args.device, run=run, extract_only=args.extract_only,
                     restart=args.restart)
    bank = args.work / BANK_FILE
    if args.extract_only:
        print(f"wrote the caption bank {bank} ({result.n_real} real images, {len(result.classes)} classes); "
              "edit it if you like, then run the same command without --extract-only")
        return 0
    if result.stopped:
        print(f"stopped at step {result.steps} of {result.config.steps}; run the same command again "
              "(without --restart) to resume", file=sys.stderr)
        return 130
    print(f"fitted {len(result.classes)} classes on {result.n_real} real images: {result.steps} steps, "
          f"loss {result.final_loss:.4f}; LoRA sha256 {result.lora_sha256[:12]} in {args.work}; bank {bank}")
    return 0


def run_export(args) -> int:
    from generators.run import Run
    from generators.synthetic.export import ExportConfig, export, process_state

    cfg = ExportConfig(per_class=args.per_class, seed=args.seed, context=args.context, steps=args.steps,
                       guidance=args.guidance, negative_prompt=args.negative, batch_size=args.batch_size,
                       size=args.size, precision=args.precision)
    cfg.validate()
    main = process_state(args.device).is_main_process
    with TqdmProgress("synth export") as progress:  # only the main process reports progress
        run = Run(progress=progress, should_stop=StopFlag(), log=_log)
        result = export(args.work, args.out, cfg, device=args.device, run=run, zip_archive=args.zip)
    if not result.complete:
        if main:
            print(f"stopped: {result.total - len(result.missing)} of {result.total} images in {args.out}; "
                  "run the same command again to continue", file=sys.stderr)
        return 130
    if main:
        extra = f"; {result.zip_path}" if result.zip_path else ""
        procs = f"{result.num_processes} process{'es' if result.num_processes > 1 else ''}"
        print(f"wrote {result.total} images to {args.out} ({cfg.context} context, {procs}){extra}")
    return 0


def _log(message: str) -> None:
    print(message, file=sys.stderr)
