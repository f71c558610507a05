"""`studio pretrain evaluators`: train the small attribute/style classifiers used for scoring.

Wired into `studio pretrain` by `add_parser(pretrain_subparsers)`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from generators.errors import UserError
from studio.commands.common import StopFlag, add_set_argument, parse_set
from studio.progress import TqdmProgress

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "assets" / "evaluators"
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")


def add_parser(pretrain_subparsers) -> None:
    parser = pretrain_subparsers.add_parser(
        "evaluators",
        help="train the mini-world evaluators (attribute + style classifiers, features for mini FID)",
        description="Render mini-world images (half plain, half in a reference style), train the multi-head "
        "evaluator CNN for a time budget, measure per-head accuracy on fresh renderings and write "
        "evaluator.safetensors, config.json, accuracy.json and training_options.json.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--seconds", type=float, default=240.0,
                        help="wall-time budget in seconds: rendering, training and the accuracy pass (default: 240)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    parser.add_argument("--precision", default="fp32", help="fp32 or bf16 (bf16 autocast; for GPUs) (default: fp32)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the training data and initialisation (default: 0)")
    parser.add_argument("--n-train", type=int, default=100_000,
                        help="training images to pre-render (cut short if rendering takes 40%% of the budget) (default: 100000)")
    add_set_argument(parser, "EvaluatorConfig", "feature_dim=128 --set widths=[16,32,64,96,128]")
    parser.set_defaults(run=run_evaluators)


def run_evaluators(args) -> int:
    if args.seconds <= 0:
        raise UserError(f"--seconds must be positive, got {args.seconds}")
    if args.n_train < 1:
        raise UserError(f"--n-train must be at least 1, got {args.n_train}")
    if args.precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {args.precision!r}")
    if args.device not in DEVICES and not str(args.device).startswith("cuda:"):
        raise UserError(f"--device must be auto, cpu or cuda[:N], got {args.device!r}")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} exists and is not a folder")

    config = evaluator_config(args.set)
    from generators.evaluator_training import train_evaluators
    from generators.run import Run

    with TqdmProgress("pretrain evaluators (s)") as progress:
        run = Run(progress=progress, should_stop=StopFlag(), log=lambda line: print(line, file=sys.stderr))
        accuracy = train_evaluators(args.out, args.seconds, device=args.device, precision=args.precision,
                                    seed=args.seed, n_train=args.n_train, run=run, config=config)
    if accuracy.get("stopped") and len(accuracy) == 1:
        print("stopped before training; nothing written", file=sys.stderr)
        return 130
    heads = ("kind", "subclass", "color", "background", "position", "scale", "tilt", "facing", "style", "kind_styled")
    print("accuracy: " + ", ".join(f"{h} {accuracy[h]:.3f}" for h in heads if accuracy.get(h) is not None))
    if accuracy.get("stopped"):
        print(f"stopped early: wrote the evaluator trained so far to {args.out}", file=sys.stderr)
        return 130
    print(f"wrote {args.out}")
    return 0


def evaluator_config(pairs: list[str]):
    """EvaluatorConfig.default() with `--set KEY=VALUE` pairs applied (None without any: the engine's default)."""
    if not pairs:
        return None
    from dataclasses import replace

    from generators.evaluators import EvaluatorConfig

    return replace(EvaluatorConfig.default(), **parse_set(pairs, EvaluatorConfig))


def add_family_head_parser(pretrain_subparsers) -> None:
    parser = pretrain_subparsers.add_parser(
        "family-head",
        help="train the style-family head (which studio-mini 2 style components an image carries)",
        description="Render mini-world images with none or some style-family components, train one head per "
        "component group for a time budget, and write the head with its accuracy on fresh renderings.",
    )
    default = Path(__file__).resolve().parents[2] / "assets" / "family-head"
    parser.add_argument("--out", type=Path, default=default, help=f"output folder (default: {default})")
    parser.add_argument("--seconds", type=float, default=900.0, help="training time budget (default: 900)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue the head in --out (fresh images, new schedule)")
    parser.set_defaults(run=run_family_head)


def run_family_head(args) -> int:
    if args.seconds <= 0:
        raise UserError(f"--seconds must be positive, got {args.seconds}")
    from generators.run import Run
    from generators.sd_mini import family_head

    with TqdmProgress("pretrain family-head (s)") as progress:
        acc = family_head.train(args.out, args.seconds, seed=args.seed, resume=args.resume,
                                run=Run(progress=progress, should_stop=StopFlag(),
                                        log=lambda line: print(line, file=sys.stderr)))
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items() if k != "stopped"))
    if acc.get("stopped"):
        print(f"stopped early: wrote the head trained so far to {args.out}", file=sys.stderr)
        return 130
    return 0
