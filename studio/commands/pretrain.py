"""`studio pretrain base|gan|evaluators`: train the embedded default bases on the mini world."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from generators.sd_mini.config import MiniBaseConfig
from studio.commands import pretrain_evaluators, pretrain_gan
from studio.commands.common import add_set_argument, parse_set
from studio.progress import TqdmProgress


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="train the embedded bases (studio-mini, gan-mini, evaluators) on the mini world")
    psub = p.add_subparsers(dest="pretrain_command", metavar="WHAT", required=True)

    D = MiniBaseConfig()
    base = psub.add_parser("base", help="train studio-mini, a diffusers StableDiffusionPipeline (autoencoder, text encoder, UNet)")
    base.add_argument("--out", type=Path, default=Path("runs/studio-mini"), help="pipeline folder to write")
    base.add_argument("--vae-seconds", type=float, default=None,
                      help="time budget of the autoencoder stage (default 1200 for a new base; on --resume 0: give it to "
                           "train the autoencoder on, anchored to its latents, before the UNet stage)")
    base.add_argument("--unet-seconds", type=float, default=10800, help="time budget of the UNet + text encoder stage")
    base.add_argument("--decoder-seconds", type=float, default=0,
                      help="with --resume: fine-tune the autoencoder's decoder alone (encoder frozen: the UNet stays valid)")
    base.add_argument("--n-images", type=int, default=None, help=f"plain training images to render (default {D.n_images:,})")
    base.add_argument("--unet-batch", type=int, default=None, help=f"UNet batch size (default {D.unet_batch})")
    base.add_argument("--unet-lr", type=float, default=None, help=f"UNet/text encoder learning rate (default {D.unet_lr:g})")
    base.add_argument("--vae-batch", type=int, default=None, help=f"autoencoder batch size (default {D.vae_batch})")
    base.add_argument("--latent-channels", type=int, default=None,
                      help=f"autoencoder latent channels of a new base (default {D.latent_channels})")
    base.add_argument("--pooled-text", action=argparse.BooleanOptionalAction, default=None,
                      help="also feed the pooled prompt into the UNet's timestep embedding (default on for a new "
                           "base; with --resume, switching it on rebuilds the UNet warm-started from the saved one)")
    base.add_argument("--species-captions", action="store_true", default=None,
                      help="name each bird's subclass in its caption ('a red sparrow bird ...', every other one "
                           "without the colour word): a base that knows the species by name, as a real base "
                           "knows bird species (bench/species_prior.py)")
    base.add_argument("--bird-share", type=float, default=None,
                      help="fraction of the training images that are birds (default: every kind equally often)")
    base.add_argument("--caption-styles", default=None, metavar="STYLE,STYLE",
                      help="reference styles to draw part of the training set in, the style's name ending the "
                           "caption (one token each): a base that knows styles by name, as a real base does. "
                           "Leave out the styles a benchmark will teach (bench/forgetting.py's: "
                           "pixel_art,watercolor,neon_glow,flat_outline,blueprint)")
    base.add_argument("--style-share", type=float, default=None,
                      help="fraction of the training images drawn in --caption-styles (e.g. 0.5)")
    base.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    base.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="autocast precision")
    base.add_argument("--seed", type=int, default=0)
    base.add_argument("--workers", type=int, default=None, help="processes that render the training set")
    base.add_argument("--resume", action="store_true",
                      help="train the pipeline in --out further (UNet and text encoder; the autoencoder stays)")
    base.add_argument("--init-from", type=Path, default=None,
                      help="start the UNet and text encoder from this pipeline's weights and vocabulary where shapes "
                           "match, UNet levels matched from the coarsest (after a new autoencoder: a warm start instead "
                           "of from scratch; with --resume the folder keeps its autoencoder)")
    base.add_argument("--log", type=Path, default=None, help="append JSON lines of losses to this file")
    add_set_argument(base, "MiniBaseConfig", "family_share=0.5 --set product_captions=true --set lr_schedule=constant")
    base.set_defaults(run=run_base)

    pretrain_gan.add_parser(psub)
    pretrain_evaluators.add_parser(psub)
    pretrain_evaluators.add_family_head_parser(psub)


def run_base(args) -> int:
    from generators.run import Run
    from generators.sd_mini.pretrain import pretrain_base
    from studio.commands.common import StopFlag

    overrides = {k: v for k, v in dict(n_images=args.n_images, unet_batch=args.unet_batch, unet_lr=args.unet_lr,
                                         vae_batch=args.vae_batch, latent_channels=args.latent_channels,
                                         unet_pooled_text=args.pooled_text, species_captions=args.species_captions,
                                         bird_share=args.bird_share, style_share=args.style_share,
                                         caption_styles=tuple(args.caption_styles.split(",")) if args.caption_styles else None,
                                         ).items() if v is not None}
    overrides.update(parse_set(args.set, MiniBaseConfig))
    with TqdmProgress("pretrain base") as progress:
        vae_seconds = args.vae_seconds if args.vae_seconds is not None or args.resume else 1200
        opts = pretrain_base(args.out, overrides, vae_seconds, args.unet_seconds, args.device, args.precision,
                             args.seed, args.resume, args.workers, log_file=args.log,
                             decoder_seconds=args.decoder_seconds, init_from=args.init_from,
                             # Ctrl-C / SIGTERM: finish the step, write the base and its state
                             run=Run(progress=progress, should_stop=StopFlag(), log=lambda line: print(line, file=sys.stderr)))
    print(f"wrote {args.out}: {opts['vae_steps']} autoencoder steps, {opts['unet_steps']} UNet steps, "
          f"{opts['wall_seconds']:.0f} s on {opts['device']}")
    return 0
