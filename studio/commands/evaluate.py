"""`studio eval base`: the fraction of generations whose kind, colour and background match the prompt.
`studio eval gan`: a GAN base's mini-FID beside its references, and how many samples show a kind."""

from __future__ import annotations

import json
from pathlib import Path

from generators.errors import UserError
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
    b.add_argument("--prompt-form", choices=("caption", "no-colour"), default="caption",
                   help="the held-out captions as they are, or without the colour word (colour then not scored)")
    b.add_argument("--evaluators", type=Path, default=None, help="evaluator folder (default: the embedded one)")
    add_base_arguments(b)
    b.set_defaults(run=run_base)

    g = esub.add_parser("gan", help="mini-FID of a GAN base beside real-vs-real and untrained references")
    g.add_argument("--base", default=None, help="GAN base folder (default: the embedded gan-mini)")
    g.add_argument("--n", type=int, default=1000, help="samples, and fresh renderings per reference set")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threshold", type=float, default=0.8, help="kind probability that counts as recognised")
    g.add_argument("--truncation", type=float, default=1.0,
                   help="truncation psi of the samples (default 1: none; StyleGAN's trick pulls w towards its average)")
    g.add_argument("--json", type=Path, required=True, help="where to write the figures")
    g.add_argument("--samples", type=Path, default=None, help="also save an 8x8 grid of samples (PNG) here")
    g.add_argument("--evaluators", type=Path, default=None, help="evaluator folder (default: the embedded one)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    g.set_defaults(run=run_gan)


def run_base(args) -> int:
    from generators import diffusion
    from generators.evaluators import load_evaluator
    from generators.run import Run
    from generators.sd_mini.evaluate import evaluate_base

    if args.n < 1:
        raise UserError(f"--n must be at least 1, got {args.n}")
    pipe = diffusion.load_base(args.base, args.device, args.precision)
    evaluator = load_evaluator(args.evaluators, device=str(pipe.device))
    kept = [] if args.samples else None
    with TqdmProgress("eval base") as progress:
        result = evaluate_base(pipe, evaluator, args.n, args.seed, args.steps, args.guidance,
                               diffusion.base_name(args.base), run=Run(progress=progress), keep_images=kept,
                               prompt_form=args.prompt_form)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    if kept:
        args.samples.mkdir(parents=True, exist_ok=True)
        for image, s in kept:
            diffusion.save_with_settings(image, s, args.samples / f"seed{s.seed}.png")
    print(" ".join(f"{k} {v:.3f}" for k, v in result.items() if k.endswith("_accuracy")))
    return 0


def run_gan(args) -> int:
    from generators import miniworld
    from generators.diffusion import resolve_device
    from generators.evaluators import load_evaluator
    from generators.gan.evaluate import evaluate_gan
    from generators.gan.folder import load_base
    from generators.gan.sampling import generate, image_grid
    from generators.run import Run

    if args.n < 2:
        raise UserError(f"--n must be at least 2, got {args.n}")
    if not 0 < args.threshold <= 1:
        raise UserError(f"--threshold is a probability in (0, 1], got {args.threshold}")
    if not 0 <= args.truncation <= 1:
        raise UserError(f"--truncation is a psi in [0, 1] (1: no truncation), got {args.truncation}")
    device = resolve_device(args.device)
    G, path = load_base(args.base, device=device)
    options = path / "training_options.json"  # a base trained on some kinds only is compared with those
    kinds = json.loads(options.read_text()).get("options", {}).get("kinds") if options.is_file() else None
    evaluator = load_evaluator(args.evaluators, device=str(device))
    with TqdmProgress("eval gan") as progress:
        result = evaluate_gan(G, evaluator, args.n, args.seed, args.threshold, tuple(kinds or miniworld.KINDS),
                              run=Run(progress=progress), truncation_psi=args.truncation)
    result["base"] = str(path)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.samples:
        args.samples.parent.mkdir(parents=True, exist_ok=True)
        image_grid(generate(G, 64, args.seed, args.truncation)).save(args.samples)  # the first 64 of the evaluated samples
    print(f"mini-FID {result['mini_fid']:.3f} (real vs real {result['mini_fid_real_vs_real']:.3f}, untrained "
          f"{result['mini_fid_untrained']:.3f}); kind recognised {result['kind_recognised_fraction']:.3f} "
          f"(real {result['kind_recognised_fraction_real']:.3f}, untrained {result['kind_recognised_fraction_untrained']:.3f}), "
          f"{len(result['kinds_recognised'])} of {result['kinds_total']} kinds")
    return 0
