"""`studio pretrain gan`: pretrain the embedded GAN base gan-mini on the plain mini world.

Wire it in with `pretrain_gan.add_parser(pretrain_subparsers)` from `studio pretrain`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from generators.errors import UserError
from studio.commands.common import StopFlag, add_set_argument, parse_set
from studio.progress import TqdmProgress

DEFAULT_CHANNELS = "256,256,128,64,32"  # GANConfig().channels (kept literal: the CLI starts without torch)
DEFAULT_R1_GAMMA, DEFAULT_LR, DEFAULT_STYLE_MIXING = 0.5, 0.002, 0.9  # pretrain_gan's defaults, literal likewise


def add_parser(pretrain_subparsers) -> None:
    parser = pretrain_subparsers.add_parser(
        "gan", help="pretrain the GAN base gan-mini (a small StyleGAN2) on the plain mini world",
        description="Train gan-mini for a wall-clock budget; writes generator.safetensors (G EMA), config.json, "
                    "discriminator.safetensors, training_options.json, samples.png and a resumable checkpoint.",
    )
    parser.add_argument("--out", type=Path, default=Path("assets/gan-mini"), help="output folder (default assets/gan-mini)")
    parser.add_argument("--seconds", type=float, default=3600, help="wall-clock budget in seconds (default 3600)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 32 on CPU, 128 on CUDA)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to train (default auto)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                        help="fp32, or bf16/fp16 autocast on CUDA (default fp32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialization and training noise (default 0)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out (checkpoint or final weights)")
    parser.add_argument("--workers", type=int, default=None,
                        help="image-rendering worker processes (default 0 on CPU: a pre-rendered cache; up to 6 on CUDA)")
    parser.add_argument("--channels", default=None,
                        help="generator widths at 4, 8, ..., 64 px, comma-separated (default "
                             f"{DEFAULT_CHANNELS}; a new run only, a resumed run keeps its own)")
    parser.add_argument("--d-channels", default=None,
                        help="discriminator widths at 4, 8, ..., 64 px (default: --channels, or with --init-from "
                             "that folder's own)")
    parser.add_argument("--init-from", type=Path, default=None,
                        help="a new run starts from this gan-mini folder, its generator and discriminator widened "
                             "to --channels and --d-channels (default: its own widths) without changing what they "
                             "compute; only widths may grow, the discriminator's 4 px width stays")
    parser.add_argument("--pool-images", type=int, default=None,
                        help="images in the training pool (default 4096 on CPU, 32768 on CUDA with workers); "
                             "more unique images keep the discriminator from memorizing them")
    parser.add_argument("--r1-gamma", type=float, default=DEFAULT_R1_GAMMA,
                        help=f"weight of the R1 penalty on the discriminator's real-image gradients (default {DEFAULT_R1_GAMMA}; "
                             "StyleGAN2-ADA's rule of thumb is 0.0002 * resolution^2 / batch)")
    parser.add_argument("--lr", type=float, default=DEFAULT_LR,
                        help=f"Adam learning rate of both networks (default {DEFAULT_LR})")
    parser.add_argument("--ema-kimg", type=float, default=None,
                        help="half-life of the generator's EMA (what gets saved) in thousands of images (default "
                             "batch * 10 / 32); a longer one averages out late-training oscillation")
    parser.add_argument("--style-mixing", type=float, default=DEFAULT_STYLE_MIXING,
                        help=f"probability of style-mixing regularization per batch (default {DEFAULT_STYLE_MIXING}; "
                             "StyleGAN2-ADA turns it off for its 32 px CIFAR setting)")
    parser.add_argument("--pl-weight", type=float, default=0.0,
                        help="weight of StyleGAN2's path-length regularization of the generator, applied every 4 "
                             "steps (default 0: off, as StyleGAN2-ADA at 32 px; StyleGAN2 uses 2)")
    parser.add_argument("--feature-d", type=Path, default=None,
                        help="an evaluator folder (e.g. assets/probe-backbone): a second, projected discriminator "
                             "reads its frozen multi-scale features (Projected GANs); off by default")
    parser.add_argument("--feature-d-weight", type=float, default=1.0,
                        help="weight of the projected discriminator's loss in the generator's (default 1.0)")
    add_set_argument(parser, "GANConfig field or pretrain_gan training option",
                     "mbstd_group=8 --set r1_interval=8 --set ema_rampup=null --set checkpoint_every=300")
    parser.set_defaults(run=run_pretrain_gan)


def run_pretrain_gan(args) -> int:
    from generators.gan.pretrain import pretrain_gan
    from generators.run import Run

    config = None
    config_set, option_set = split_set(args.set)
    if args.resume and (args.channels or args.d_channels):
        raise UserError("--channels and --d-channels set a new run's architecture; a resumed run keeps its own "
                        "(drop them)")
    widths, d_widths = _widths(args.channels, "--channels"), _widths(args.d_channels, "--d-channels")
    if args.init_from is not None:  # its architecture, widened where asked
        from generators.gan.folder import read_config
        from generators.gan.stylegan2 import GANConfig

        old = read_config(args.init_from)
        config = GANConfig.from_dict({**old.to_dict(), "channels": widths or old.channels,
                                      "d_channels": d_widths or old.disc_channels()})
    elif widths or d_widths:
        from generators.gan.stylegan2 import GANConfig

        config = GANConfig(**({"channels": widths} if widths else {}), d_channels=d_widths)
    if config_set:  # --set, after the other flags
        if args.resume:
            raise UserError(f"--set {', '.join(config_set)}: GANConfig fields set a new run's architecture; a resumed "
                            "run keeps its own (drop them)")
        from dataclasses import replace

        from generators.gan.stylegan2 import GANConfig

        config = replace(config if config is not None else GANConfig(), **config_set)
    options = dict(batch_size=args.batch, num_workers=args.workers, pool_images=args.pool_images,
                   init_from=args.init_from, r1_gamma=args.r1_gamma, lr=args.lr, ema_kimg=args.ema_kimg,
                   style_mixing_prob=args.style_mixing, feature_d=args.feature_d,
                   feature_d_weight=args.feature_d_weight, pl_weight=args.pl_weight)
    options.update(option_set)
    with TqdmProgress("pretrain gan (s)") as progress:
        summary = pretrain_gan(
            args.out, config, seconds=args.seconds, device=args.device, precision=args.precision, seed=args.seed,
            resume=args.resume, run=Run(progress=progress, should_stop=StopFlag()), **options,
        )
    losses = ", ".join(f"{k} {v:.3f}" for k, v in summary["final_losses"].items())
    print(f"wrote {args.out}: {summary['steps']} steps ({summary['images_seen']} images) on "
          f"{summary['device_name']}, {summary['s_per_step']:.4f} s/step; {losses}")
    if summary["stopped_by"] == "should_stop":
        print(f"stopped before the budget was spent; continue with --resume --out {args.out}", file=sys.stderr)
        return 130
    return 0


def _widths(text: str | None, flag: str) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(c) for c in text.split(","))
    except ValueError:
        raise UserError(f"{flag} takes comma-separated integers such as 128,128,64,32,16, got {text!r}") from None


def training_options_class():
    """pretrain_gan's keyword-only training options (batch_size, r1_interval, ema_rampup, ...) as a
    dataclass, so that `--set` reads them as it reads a config's fields."""
    import dataclasses
    import inspect

    from generators.gan.pretrain import pretrain_gan

    params = [p for p in inspect.signature(pretrain_gan).parameters.values() if p.kind is p.KEYWORD_ONLY]
    return dataclasses.make_dataclass("GANTrainingOptions", [(p.name, p.annotation, p.default) for p in params])


def split_set(pairs: list[str]) -> tuple[dict, dict]:
    """`--set KEY=VALUE` pairs as (GANConfig fields, pretrain_gan training options); a key that is
    neither is a UserError naming both kinds of keys."""
    import dataclasses

    from generators.gan.stylegan2 import GANConfig

    config_keys = {f.name for f in dataclasses.fields(GANConfig)}
    options_cls = training_options_class()
    option_keys = {f.name for f in dataclasses.fields(options_cls)}
    config_pairs, option_pairs = [], []
    for pair in pairs:
        key = pair.partition("=")[0].strip()
        if "=" in pair and key in config_keys:
            config_pairs.append(pair)
        elif "=" in pair and key in option_keys:
            option_pairs.append(pair)
        else:
            raise UserError(f"--set {pair!r}: expected KEY=VALUE with KEY a GANConfig field "
                            f"({', '.join(sorted(config_keys))}) or a training option ({', '.join(sorted(option_keys))})")
    return parse_set(config_pairs, GANConfig), parse_set(option_pairs, options_cls)
