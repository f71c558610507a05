"""`studio eval base`: the fraction of generations whose kind, colour and background match the prompt."""

from __future__ import annotations

import json
from pathlib import Path

from studio.commands.common import add_base_arguments
from studio.progress import TqdmProgress


def register(sub) -> None:
    p = sub.add_parser("eval", help="measure a base with the mini-world evaluators")
    esub = p.add_subparsers(dest="eval_command", metavar="WHAT", required=True)
    b = esub.add_parser("base", help="generate from held-out attribute combinations and score them")
    b.add_argument("--n", type=int, default=200, help="number of generated images")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--steps", type=int, default=25)
    b.add_argument("--guidance", type=float, default=5.0)
    b.add_argument("--json", type=Path, required=True, help="where to write the scores")
    b.add_argument("--samples", type=Path, default=None, help="also save the generated images here")
    b.add_argument("--evaluators", type=Path, default=None, help="evaluator folder (default: the embedded one)")
    add_base_arguments(b)
    b.set_defaults(run=run_base)


def run_base(args) -> int:
    from generators import diffusion
    from generators.evaluators import load_evaluator
    from generators.sd_mini.evaluate import evaluate_base

    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    pipe = diffusion.load_base(args.base, args.device, args.precision)
    evaluator = load_evaluator(args.evaluators, device=str(pipe.device))
    kept = [] if args.samples else None
    with TqdmProgress("eval base") as progress:
        result = evaluate_base(pipe, evaluator, args.n, args.seed, args.steps, args.guidance,
                               diffusion.base_name(args.base), progress=progress, keep_images=kept)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    if kept:
        args.samples.mkdir(parents=True, exist_ok=True)
        for image, s in kept:
            diffusion.save_with_settings(image, s, args.samples / f"seed{s.seed}.png")
    print(" ".join(f"{k} {v:.3f}" for k, v in result.items() if k.endswith("_accuracy")))
    return 0
