"""`studio generate`: text-to-image with settings embedded in every PNG and a JSON sidecar."""

from __future__ import annotations

import sys
from pathlib import Path

from generators.errors import UserError
from generators.run import Run
from studio.commands.common import StopFlag, add_base_arguments, check_base
from studio.progress import TqdmProgress


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate images from a prompt (PNG + JSON sidecar with every setting)")
    p.add_argument("--prompt", required=True, help="what to draw")
    p.add_argument("--negative", default="", help="negative prompt")
    p.add_argument("--n", type=int, default=4, help="number of images; image i uses seed S+i")
    p.add_argument("--seed", type=int, default=0, help="seed of the first image")
    p.add_argument("--steps", type=int, default=25, help="sampling steps")
    p.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance scale")
    p.add_argument("--size", type=int, default=None,
                   help="image side in pixels, a positive multiple of 8 (default: the base's resolution)")
    p.add_argument("--out", type=Path, required=True, help="folder to write into (created if missing)")
    p.add_argument("--style", action="append", default=[],
                   help="museum style to draw in (repeatable); its token is added to the prompt unless written there as <name>")
    p.add_argument("--museum", type=Path, default=None,
                   help="museum folder whose styles and shared LoRA to use (default with --style: $STUDIO_HOME/museum)")
    add_base_arguments(p)
    p.set_defaults(run=run, preflight=preflight)


def preflight(args) -> None:
    """The arguments' own checks, before torch is imported (studio/cli.py)."""
    if args.n < 1 or args.steps < 1:
        raise UserError("--n and --steps must be at least 1")
    if args.size is not None and (args.size < 8 or args.size % 8):
        raise UserError(f"--size must be a positive multiple of 8 (the autoencoder halves it three times), got {args.size}")
    check_base(args)


def run(args) -> int:
    from generators import diffusion

    prompt = args.prompt
    if args.style or args.museum:
        from generators.museum.engine import load_museum_pipeline
        from generators.museum.train import fit_prompt_with_note
        from studio.commands.museum import museum_dir
        from styles.museum import Museum

        museum = Museum.open(museum_dir(args), base=diffusion.base_name(args.base))
        tokens = [museum.style(n).token for n in args.style]
        pipe = load_museum_pipeline(museum, args.base, args.device, args.precision)
        # The pipeline truncates at the text encoder's window, which would cut the style tokens
        # off the end of a long prompt: shorten the content instead, as training does.
        prompt, note = fit_prompt_with_note(pipe.tokenizer, args.prompt, tokens) if tokens else (args.prompt, None)
        if note:
            print(f"studio: {note}: {prompt!r}", file=sys.stderr)
    else:
        pipe = diffusion.load_base(args.base, args.device, args.precision)
    size = args.size or diffusion.base_resolution(pipe)
    args.out.mkdir(parents=True, exist_ok=True)
    settings = [
        diffusion.GenerationSettings(
            prompt=prompt, negative_prompt=args.negative, seed=args.seed + i, steps=args.steps,
            guidance=args.guidance, width=size, height=size, base=diffusion.base_name(args.base),
            scheduler=type(pipe.scheduler).__name__, styles=tuple(args.style),
        )
        for i in range(args.n)
    ]
    paths = [args.out / f"seed{s.seed}.png" for s in settings]
    taken = [p for p in paths if p.exists()]
    if taken:
        raise FileExistsError(f"{taken[0]} already exists; choose another --out or --seed")
    # The bar moves per denoising step: a batch of images is one pipeline call. Ctrl-C (or SIGTERM)
    # stops after the current step; the images of the batches finished by then are written.
    with TqdmProgress(f"generate {len(settings)} image{'s' * (len(settings) > 1)} (steps)") as progress:
        images = diffusion.generate(pipe, settings, run=Run(progress=progress, should_stop=StopFlag()))
    for image, s, path in zip(images, settings, paths):
        diffusion.save_with_settings(image, s, path)
    if images.stopped:
        print(f"studio: stopped; wrote the {len(images)} of {len(settings)} images finished to {args.out}", file=sys.stderr)
        return 130
    print(f"wrote {len(paths)} images to {args.out}")
    return 0
