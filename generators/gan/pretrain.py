"""Pretrain gan-mini on the plain mini world, on a wall-clock budget: the GAN base's front door.

    from generators.gan.pretrain import pretrain_gan
    from generators.gan.stylegan2 import GANConfig
    pretrain_gan("assets/gan-mini", GANConfig(), seconds=480, device="cuda", precision="bf16", num_workers=6)

This module checks the options, decides what the output folder holds (a new run, a resume, a
warm start widened from another folder), builds the networks and writes the final files; the
step itself is `generators.gan.pretrain_loop` (losses, lazy R1, style mixing, path length, G EMA,
autocast), the images `generators.gan.image_pool`, the checkpoint `generators.gan.pretrain_files`.
Optionally a second, projected discriminator on a frozen evaluator's features (`feature_d`,
generators/gan/feature_d.py) is trained beside the pixel one; logged as loss_P / loss_G_P.

Speed (default config): CPU, 1 thread, batch 32: ~2.9 s/step. H200, batch 128, 6 workers:
~0.06 s/step fp32 (TF32 convs), ~0.07 bf16; batch 256 bf16 ~0.10 s/step. At this size the
step is bound by kernel-launch / Python overhead, so bf16 buys no speed; it is kept for
bigger configs.

Files in out_dir: checkpoint.safetensors + checkpoint.json, rewritten every `checkpoint_every`
seconds and at the end; samples.png (8x8 G_ema grid, fixed seed) at each checkpoint; at the end
generator.safetensors (G_ema) + config.json + discriminator.safetensors + training_options.json.

The run seam (generators/run.py): progress(elapsed_s, total_s, steps=, kimg=, loss_G=, loss_D=, r1=,
s_per_step=) about once per `log_every` seconds, its unit whole seconds of this call's budget
(total = ceil(seconds); done reaches it when the budget is spent); should_stop() is polled every
step and ends the run cleanly (files written); every run.preview_every steps run.preview gets
G_ema's samples of the preview seeds (`generators.gan.sampling.preview_images`).
"""

from __future__ import annotations

import copy
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from generators.diffusion import resolve_device
from generators.errors import UserError
from generators.files import CHECKPOINT_FILE, atomic_write_json
from generators.gan.folder import CONFIG_FILE, DISCRIMINATOR_FILE, GENERATOR_FILE, save_discriminator, save_generator
from generators.gan.image_pool import ImagePool
from generators.gan.pretrain_files import (
    CHECKPOINT_JSON,
    OPTIONS_FILE,
    Networks,
    TrainingState,
    load_networks,
    read_resume_state,
    save_checkpoint,
    start_from_folder,
    write_samples,
)
from generators.gan.pretrain_loop import LoopSettings, train_loop
from generators.gan.stylegan2 import Discriminator, GANConfig, Generator, count_params
from generators.run import Run, as_run


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def pretrain_gan(
    out_dir,
    config: GANConfig | None = None,
    seconds: float = 3600,
    device: str = "auto",
    precision: str = "fp32",
    seed: int = 0,
    resume: bool = False,
    run: Run | None = None,
    *,
    batch_size: int | None = None,
    num_workers: int | None = None,
    lr: float = 0.002,
    r1_gamma: float = 0.5,
    r1_interval: int = 16,
    style_mixing_prob: float = 0.9,
    pl_weight: float = 0.0,
    pl_interval: int = 4,
    ema_kimg: float | None = None,
    ema_rampup: float | None = 0.05,
    checkpoint_every: float = 120.0,
    pool_images: int | None = None,
    world_seed: int = 0,
    kinds: tuple[str, ...] | None = None,
    log_every: float = 1.0,
    cudnn_benchmark: bool = False,
    init_from=None,
    feature_d=None,
    feature_d_weight: float = 1.0,
) -> dict:
    """Train gan-mini for `seconds` of wall-clock (setup included; at least one step), write out_dir.

    config: the architecture (default GANConfig()); with resume=True it may be None (the
    checkpoint's is used) and must otherwise equal the checkpoint's.
    batch_size: default 32 on CPU, 128 on CUDA. num_workers: rendering processes (default 0 on
    CPU, min(6, cpus - 2) on CUDA). pool_images: the on-device image pool (default 4096 on CPU,
    32768 with workers on CUDA); with num_workers=0 it is the size of the pre-rendered cache.
    ema_kimg: G_ema half-life in thousands of images (default batch * 10 / 32).
    init_from: a gan-mini folder that a new run starts from: its generator widened to
    `config.channels` and its discriminator to `config.disc_channels()` (`widen_generator`,
    `widen_discriminator`: function-preserving, so the run starts from its samples and logits).
    feature_d: an evaluator folder (e.g. assets/probe-backbone) whose frozen features a second,
    projected discriminator reads (`feature_d.FeatureDiscriminator`); its loss is added to G's
    with weight `feature_d_weight`. Its heads live in the checkpoint (fresh ones when absent).
    cudnn_benchmark: off by default: on an H200 its autotuning cost ~30 s of warm-up per
    precision for a ~5 % faster step afterwards, a bad trade for runs of minutes.
    run: progress in whole seconds of the budget, stop, previews (see the module docstring).
    Returns the dict written to training_options.json.
    """
    t_start = time.monotonic()
    run = as_run(run)
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    out = Path(out_dir)
    dev = resolve_device(device)
    if precision not in ("fp32", "bf16", "fp16"):
        raise UserError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
    if precision != "fp32" and dev.type != "cuda":
        raise UserError(f"precision {precision} needs a CUDA device; use fp32 on the CPU")
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise UserError("this CUDA device does not support bf16; use --precision fp16 or fp32")
    if not seconds or seconds <= 0:
        raise UserError(f"seconds must be positive, got {seconds}")
    batch = int(batch_size) if batch_size is not None else (128 if dev.type == "cuda" else 32)
    if batch < 1:
        raise UserError(f"batch size must be at least 1, got {batch}")
    if num_workers is None:
        num_workers = min(6, max(0, (os.cpu_count() or 1) - 2)) if dev.type == "cuda" else 0
    if num_workers < 0:
        raise UserError(f"workers must be 0 or more, got {num_workers}")
    if pool_images is None:
        pool_images = 32768 if (dev.type == "cuda" and num_workers > 0) else 4096
    if pool_images < 1:
        raise UserError(f"pool_images must be at least 1, got {pool_images}")
    if r1_interval < 1 or r1_gamma < 0 or lr <= 0:
        raise UserError("r1_interval must be >= 1, r1_gamma >= 0 and lr > 0")
    if not 0 <= style_mixing_prob <= 1:
        raise UserError(f"style_mixing_prob must be between 0 and 1, got {style_mixing_prob}")
    if pl_weight < 0 or pl_interval < 1:
        raise UserError(f"pl_weight must be >= 0 and pl_interval >= 1, got {pl_weight} and {pl_interval}")
    if feature_d_weight <= 0:
        raise UserError(f"feature_d_weight must be positive, got {feature_d_weight}")
    if ema_kimg is not None and ema_kimg <= 0:
        raise UserError(f"ema_kimg must be positive, got {ema_kimg}")
    from generators.miniworld import KINDS

    kinds = tuple(kinds) if kinds else KINDS
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise UserError(f"unknown kind(s) {unknown}; choose from {', '.join(KINDS)}")

    # ---- what is in out_dir
    ckpt_json = out / CHECKPOINT_JSON
    has_ckpt = ckpt_json.is_file() and (out / CHECKPOINT_FILE).is_file()
    has_final = (out / GENERATOR_FILE).is_file() and (out / DISCRIMINATOR_FILE).is_file()
    if resume:
        if not (has_ckpt or has_final):
            raise FileNotFoundError(f"nothing to resume in {out}: no {CHECKPOINT_JSON} or {GENERATOR_FILE}")
    elif has_ckpt or has_final or (out / CONFIG_FILE).exists():
        raise FileExistsError(f"{out} already holds a GAN run; resume it (--resume) or choose a new --out folder")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} is not a folder")

    if init_from is not None and resume:
        raise UserError("init_from starts a new run from another folder; resume continues this one: use one of them")
    if resume:
        cfg, state = read_resume_state(out, has_ckpt)
        if config is not None and config != cfg:
            raise UserError(f"the given config differs from the one in {out}; resume without a config")
    else:
        cfg, state = (config if config is not None else GANConfig()), TrainingState()
    state.runs += 1
    out.mkdir(parents=True, exist_ok=True)

    if ema_kimg is None:
        ema_kimg = batch * 10 / 32
    options = dict(
        out_dir=str(out), seconds=seconds, device=str(dev), precision=precision, seed=seed, resume=resume,
        batch_size=batch, num_workers=num_workers, lr=lr, betas=[0.0, 0.99], r1_gamma=r1_gamma,
        r1_interval=r1_interval, style_mixing_prob=style_mixing_prob, ema_kimg=ema_kimg, ema_rampup=ema_rampup,
        checkpoint_every=checkpoint_every, pool_images=pool_images, world_seed=world_seed, kinds=list(kinds),
        init_from=None if init_from is None else str(init_from),
        feature_d=None if feature_d is None else str(feature_d),
        feature_d_weight=feature_d_weight if feature_d is not None else None,
        loss="non-saturating logistic", pl_weight=pl_weight, pl_interval=pl_interval if pl_weight else None,
        cudnn_benchmark=bool(cudnn_benchmark),
    )
    settings = LoopSettings(precision=precision, batch=batch, r1_gamma=r1_gamma, r1_interval=r1_interval,
                            style_mixing_prob=style_mixing_prob, ema_kimg=ema_kimg, ema_rampup=ema_rampup,
                            checkpoint_every=checkpoint_every, seconds=seconds, log_every=log_every,
                            feature_d_weight=feature_d_weight, pl_weight=pl_weight, pl_interval=pl_interval)

    saved_benchmark = torch.backends.cudnn.benchmark
    devices = [dev.index or 0] if dev.type == "cuda" else []
    pool = None
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed + 1_000_003 * (state.runs - 1))
            if dev.type == "cuda":
                torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
            nets = _build_networks(cfg, dev, lr, r1_interval, pl_weight, pl_interval, feature_d)
            if resume:
                load_networks(out, has_ckpt, nets, dev)
            elif init_from is not None:
                start_from_folder(Path(init_from), cfg, nets)

            pool = ImagePool(dev, cfg.resolution, pool_images, num_workers, world_seed, kinds, state.next_index)
            pool.refresh(block_until=min(pool.pool.shape[0], max(4 * batch, 1024)), should_stop=run.should_stop)
            result = train_loop(nets, pool, cfg, state, out, dev, settings, t_start, options, run)
            state.next_index = pool.next_index if num_workers > 0 else state.next_index
            pool.close()
            pool = None

            # ---- final files
            save_checkpoint(out, nets, state, cfg, options)
            save_generator(nets.G_ema, cfg, out)
            save_discriminator(nets.D, cfg, out)
            write_samples(nets.G_ema, out, dev)
    finally:
        if pool is not None:
            pool.close()
        torch.backends.cudnn.benchmark = saved_benchmark

    wall = time.monotonic() - t_start
    summary = dict(
        options=options,
        config=cfg.to_dict(),
        steps=state.step,
        steps_this_run=result["steps"],
        images_seen=state.images_seen,
        images_rendered_this_run=result["images_rendered"],
        next_index=state.next_index,
        wall_time_s=round(wall, 2),
        train_seconds_this_run=round(result["train_seconds"], 2),
        train_seconds_total=round(state.train_seconds, 2),
        s_per_step=result["s_per_step"],
        runs=state.runs,
        pl_mean=state.pl_mean,
        stopped_by=result["stopped_by"],
        final_losses=result["losses"],
        g_params=count_params(nets.G_ema),
        d_params=count_params(nets.D),
        device_name=_device_name(dev),
        torch_version=torch.__version__,
        python_version=platform.python_version(),
        command_line=list(sys.argv),
        started_at=started_at,
        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    atomic_write_json(out / OPTIONS_FILE, summary, sort_keys=True)
    return summary


def _build_networks(cfg: GANConfig, dev, lr, r1_interval, pl_weight, pl_interval, feature_d) -> Networks:
    """Fresh G, D, G_ema and their Adam optimizers, their rates and betas corrected for the lazy
    regularizers' intervals (StyleGAN2 Appendix B)."""
    G = Generator(cfg).to(dev).train()
    D = Discriminator(cfg).to(dev).train()
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    c = r1_interval / (r1_interval + 1)
    fused = dev.type == "cuda"
    g = pl_interval / (pl_interval + 1) if pl_weight else 1.0
    opt_G = torch.optim.Adam(G.parameters(), lr=lr * g, betas=(0.0, 0.99**g), eps=1e-8, fused=fused)
    opt_D = torch.optim.Adam(D.parameters(), lr=lr * c, betas=(0.0, 0.99**c), eps=1e-8, fused=fused)
    nets = Networks(G, D, G_ema, opt_G, opt_D)
    if feature_d is not None:
        from generators.gan.feature_d import load_feature_discriminator

        nets.D_feat = load_feature_discriminator(feature_d).to(dev).train()
        nets.opt_P = torch.optim.Adam(nets.D_feat.heads.parameters(), lr=lr, betas=(0.0, 0.99), eps=1e-8, fused=fused)
    return nets
