"""Pretrain gan-mini on the plain mini world, on a wall-clock budget.

    from generators.gan.pretrain import pretrain_gan
    from generators.gan.stylegan2 import GANConfig
    pretrain_gan("assets/gan-mini", GANConfig(), seconds=480, device="cuda", precision="bf16", num_workers=6)

Training: non-saturating logistic loss, lazy R1 on reals (every `r1_interval` D steps, in
fp32, Adam of D corrected for the lazy interval), Adam lr 0.002 betas (0, 0.99), style
mixing, G EMA (`G_ema` is what gets saved), per-step losses reduced in fp32; optional bf16
or fp16 autocast on CUDA (fp16 with a GradScaler). Optional lazy path-length regularization
(`pl_weight`, StyleGAN2 Eq. 4; off by default, as StyleGAN2-ADA at 32 px): every `pl_interval`
G steps, on half a batch, in fp32, Adam of G then corrected for the interval as D's is for R1.
Optionally a second, projected discriminator on a frozen evaluator's features (`feature_d`,
generators/gan/feature_d.py), trained beside the pixel one; logged as loss_P / loss_G_P.
Each step renders one G batch and reuses it for the D step (detached) and the G step.
Speed (default config): CPU, 1 thread, batch 32: ~2.9 s/step. H200, batch 128, 6 workers:
~0.06 s/step fp32 (TF32 convs), ~0.07 bf16; batch 256 bf16 ~0.10 s/step. At this size the
step is bound by kernel-launch / Python overhead, so bf16 buys no speed; it is kept for
bigger configs. Per step there is no host-device synchronization (losses are summed on the
device and read about once a second).

Data: images `miniworld.generate(world_seed, i, size=resolution, kinds=kinds, held_out=False)`
(held-out kind/colour/background triples never appear in base pretraining). They live in an
on-device uint8 pool that training batches are drawn from at random:
  * num_workers > 0: a torch DataLoader whose workers render chunks of consecutive indices
    without end; a feeder thread hands finished chunks over and each step writes the ready
    ones into the pool (a ring), so training never waits for rendering once the pool holds
    a first few batches. On resume the index stream continues where it stopped.
  * num_workers == 0: a pre-rendered cache of `cache_images` images (indices 0..n-1).

Files in out_dir: checkpoint.safetensors (G, D, G_ema, Adam moments) + checkpoint.json (step,
config, options, counters), rewritten every `checkpoint_every` seconds and at the end, both
atomically; samples.png (8x8 G_ema grid, fixed seed) at each checkpoint; at the end
generator.safetensors (G_ema) + config.json + discriminator.safetensors + training_options.json.
No pickle anywhere: optimizer moments are stored as safetensors tensors.

Callback seams: progress(elapsed_s, seconds, steps=, kimg=, loss_G=, loss_D=, r1=, s_per_step=)
at most about once per `log_every` seconds (so the "step" of the seam is wall-clock seconds of
this run's budget); should_stop() is polled every step and ends the run cleanly (files written).
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import platform
import queue
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from generators.diffusion import resolve_device
from generators.errors import UserError
from generators.files import CHECKPOINT_FILE, atomic_save_tensors, atomic_write_bytes, atomic_write_json
from generators.gan.stylegan2 import (
    CONFIG_FILE,
    DISCRIMINATOR_FILE,
    FORMAT,
    GENERATOR_FILE,
    Discriminator,
    GANConfig,
    Generator,
    count_params,
    image_grid,
    load_discriminator,
    load_generator,
    read_config,
    save_discriminator,
    save_generator,
    seeded_z,
    state_tensors,
    widen_discriminator,
    widen_generator,
)
from generators.optim_state import load_optimizer, optimizer_tensors

CHECKPOINT_JSON = "checkpoint.json"
OPTIONS_FILE = "training_options.json"
SAMPLES_FILE = "samples.png"
SAMPLE_SEED = 20240
CHUNK = 64  # images per rendered DataLoader item


# --------------------------------------------------------------------------- data


def render_images(world_seed: int, first: int, n: int, resolution: int, kinds) -> np.ndarray:
    """uint8 [n, 3, R, R]: mini-world images first..first+n-1 (plain style, no held-out triples)."""
    from generators.miniworld import generate

    out = np.empty((n, 3, resolution, resolution), dtype=np.uint8)
    for j in range(n):
        img = generate(world_seed, first + j, size=resolution, kinds=kinds, held_out=False).image
        out[j] = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    return out


class RenderStream(torch.utils.data.IterableDataset):
    """Endless chunks of CHUNK consecutive images; worker k renders chunks k, k+W, k+2W, ...

    The DataLoader hands chunks back in round-robin worker order, i.e. in index order.
    """

    def __init__(self, world_seed, resolution, kinds, start_index, chunk=CHUNK):
        super().__init__()
        self.world_seed, self.resolution, self.kinds = world_seed, resolution, tuple(kinds)
        self.start_index, self.chunk = int(start_index), int(chunk)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (0, 1) if info is None else (info.id, info.num_workers)
        if info is not None:
            torch.set_num_threads(1)
        b = wid
        while True:
            first = self.start_index + b * self.chunk
            yield torch.from_numpy(render_images(self.world_seed, first, self.chunk, self.resolution, self.kinds))
            b += nw


class ImagePool:
    """uint8 images on the training device; `batch(n)` draws n at random as floats in [-1, 1]."""

    def __init__(self, device, resolution, capacity, num_workers, world_seed, kinds, start_index,
                 should_stop=None, chunk=CHUNK):
        self.device, self.chunk = device, chunk
        self.num_workers = num_workers
        self.start_index = int(start_index)
        self.chunks_in = 0
        self.filled = 0
        self.pos = 0
        self._thread = None
        self._error = None
        if num_workers == 0:
            imgs = torch.from_numpy(render_images(world_seed, 0, capacity, resolution, kinds))
            self.pool = imgs.to(device)
            self.filled = capacity
            return
        capacity = max(chunk, (capacity // chunk) * chunk)
        self.pool = torch.empty((capacity, 3, resolution, resolution), dtype=torch.uint8, device=device)
        loader = torch.utils.data.DataLoader(
            RenderStream(world_seed, resolution, kinds, start_index, chunk),
            batch_size=None, num_workers=num_workers, prefetch_factor=4,
            pin_memory=(torch.device(device).type == "cuda"),
        )
        self._queue = queue.Queue(maxsize=4 * num_workers + 4)
        self._stop = threading.Event()
        self._iter = iter(loader)
        self._thread = threading.Thread(target=self._feed, name="gan-data-feeder", daemon=True)
        self._thread.start()

    def _feed(self):
        try:
            for item in self._iter:
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except Exception as err:  # surfaced in refresh()
            self._error = err

    @property
    def next_index(self) -> int:
        """First world index not yet handed to training (where a resumed stream starts)."""
        return self.start_index + self.chunks_in * self.chunk

    @property
    def images_rendered(self) -> int:
        return self.filled if self.num_workers == 0 else self.chunks_in * self.chunk

    def refresh(self, max_chunks: int = 16, block_until: int = 0, should_stop=None) -> None:
        """Move ready chunks into the pool; with block_until, wait until that many images are in."""
        if self._thread is None:
            return
        moved = 0
        while True:
            if self._error is not None:
                raise RuntimeError(f"rendering training images failed: {self._error!r}") from self._error
            need = self.filled < block_until
            if not need and moved >= max_chunks:
                return
            try:
                item = self._queue.get(timeout=0.2) if need else self._queue.get_nowait()
            except queue.Empty:
                if not need:
                    return
                if should_stop is not None and should_stop():
                    return
                if not self._thread.is_alive():
                    raise RuntimeError("the image rendering workers stopped")
                continue
            n = item.shape[0]
            self.pool[self.pos:self.pos + n].copy_(item, non_blocking=True)
            self.pos = (self.pos + n) % self.pool.shape[0]
            self.filled = min(self.pool.shape[0], self.filled + n)
            self.chunks_in += 1
            moved += 1

    def batch(self, n: int) -> torch.Tensor:
        idx = torch.randint(self.filled, (n,), device=self.pool.device)
        return self.pool[idx].float().div_(127.5).sub_(1.0)

    def close(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        while True:  # unblock a feeder waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=10)
        it, self._iter = self._iter, None
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        del it
        self._thread = None


# --------------------------------------------------------------------------- options & checkpoints


@dataclass
class _State:
    step: int = 0
    images_seen: int = 0
    next_index: int = 0
    train_seconds: float = 0.0
    runs: int = 0
    pl_mean: float = 0.0  # the path-length regularizer's running target a (StyleGAN2 Eq. 4)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _module_state(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _write_samples(G_ema: Generator, out: Path, device) -> None:
    with torch.no_grad():
        z = seeded_z(64, G_ema.z_dim, SAMPLE_SEED, device)
        imgs = G_ema(z, truncation_psi=1.0, noise_mode="const", clamp=True, fused_modconv=False)
    buf = io.BytesIO()
    image_grid(imgs, nrow=8).save(buf, format="PNG")
    atomic_write_bytes(out / SAMPLES_FILE, buf.getvalue())


# --------------------------------------------------------------------------- training


def pretrain_gan(
    out_dir,
    config: GANConfig | None = None,
    seconds: float = 3600,
    device: str = "auto",
    precision: str = "fp32",
    seed: int = 0,
    resume: bool = False,
    progress=None,
    should_stop=None,
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
    Returns the dict written to training_options.json.
    """
    t_start = time.monotonic()
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
    state = _State()
    ckpt = None
    if resume:
        if has_ckpt:
            ckpt = json.loads(ckpt_json.read_text())
            if ckpt.get("format") != FORMAT:
                raise UserError(f"{ckpt_json} is not a gan-mini checkpoint")
            saved_cfg = GANConfig.from_dict(ckpt["config"])
            for k in ("step", "images_seen", "next_index", "train_seconds", "runs", "pl_mean"):
                setattr(state, k, type(getattr(state, k))(ckpt.get(k, 0)))
        else:
            saved_cfg = read_config(out)
            opts_path = out / OPTIONS_FILE
            if opts_path.is_file():
                prev = json.loads(opts_path.read_text())
                state.step, state.images_seen = int(prev.get("steps", 0)), int(prev.get("images_seen", 0))
                state.next_index = int(prev.get("next_index", 0))
                state.train_seconds = float(prev.get("train_seconds_total", 0.0))
                state.runs = int(prev.get("runs", 0))
                state.pl_mean = float(prev.get("pl_mean", 0.0))
        if config is not None and config != saved_cfg:
            raise UserError(f"the given config differs from the one in {out}; resume without a config")
        cfg = saved_cfg
    else:
        cfg = config if config is not None else GANConfig()
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

    saved_benchmark = torch.backends.cudnn.benchmark
    devices = [dev.index or 0] if dev.type == "cuda" else []
    pool = None
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed + 1_000_003 * (state.runs - 1))
            if dev.type == "cuda":
                torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
            G = Generator(cfg).to(dev).train()
            D = Discriminator(cfg).to(dev).train()
            G_ema = copy.deepcopy(G).eval().requires_grad_(False)
            c = r1_interval / (r1_interval + 1)
            fused = dev.type == "cuda"
            g = pl_interval / (pl_interval + 1) if pl_weight else 1.0
            opt_G = torch.optim.Adam(G.parameters(), lr=lr * g, betas=(0.0, 0.99**g), eps=1e-8, fused=fused)
            opt_D = torch.optim.Adam(D.parameters(), lr=lr * c, betas=(0.0, 0.99**c), eps=1e-8, fused=fused)
            D_feat = opt_P = None
            if feature_d is not None:
                from generators.gan.feature_d import load_feature_discriminator

                D_feat = load_feature_discriminator(feature_d).to(dev).train()
                opt_P = torch.optim.Adam(D_feat.heads.parameters(), lr=lr, betas=(0.0, 0.99), eps=1e-8, fused=fused)
            if resume:
                _load_state(out, has_ckpt, G, D, G_ema, opt_G, opt_D, dev, D_feat, opt_P)
            elif init_from is not None:
                _init_from(Path(init_from), cfg, G, D, G_ema)

            pool = ImagePool(dev, cfg.resolution, pool_images, num_workers, world_seed, kinds, state.next_index)
            pool.refresh(block_until=min(pool.pool.shape[0], max(4 * batch, 1024)), should_stop=should_stop)
            result = _train_loop(
                G, D, G_ema, opt_G, opt_D, pool, cfg, state, out, dev, precision, batch, r1_gamma, r1_interval,
                style_mixing_prob, ema_kimg, ema_rampup, checkpoint_every, seconds, t_start, options, progress,
                should_stop, log_every, D_feat, opt_P, feature_d_weight, pl_weight, pl_interval,
            )
            state.next_index = pool.next_index if num_workers > 0 else state.next_index
            pool.close()
            pool = None

            # ---- final files
            _save_checkpoint(out, G, D, G_ema, opt_G, opt_D, state, cfg, options, D_feat, opt_P)
            save_generator(G_ema, cfg, out)
            save_discriminator(D, cfg, out)
            _write_samples(G_ema, out, dev)
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
        g_params=count_params(G_ema),
        d_params=count_params(D),
        device_name=_device_name(dev),
        torch_version=torch.__version__,
        python_version=platform.python_version(),
        command_line=list(sys.argv),
        started_at=started_at,
        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    atomic_write_json(out / OPTIONS_FILE, summary, sort_keys=True)
    return summary


def _load_state(out: Path, has_ckpt: bool, G, D, G_ema, opt_G, opt_D, dev, D_feat=None, opt_P=None) -> None:
    from safetensors.torch import load_file

    if has_ckpt:
        tensors = load_file(str(out / CHECKPOINT_FILE), device="cpu")
        try:
            G.load_state_dict(_module_state(tensors, "G."))
            D.load_state_dict(_module_state(tensors, "D."))
            G_ema.load_state_dict(_module_state(tensors, "G_ema."))
        except RuntimeError as err:
            raise UserError(f"{out / CHECKPOINT_FILE} does not match its checkpoint.json config") from err
        load_optimizer(opt_G, list(G.parameters()), tensors, "opt_G.", dev)
        load_optimizer(opt_D, list(D.parameters()), tensors, "opt_D.", dev)
        heads = _module_state(tensors, "P.")
        if D_feat is not None and heads:  # a run that had feature heads continues with them
            try:
                D_feat.heads.load_state_dict(heads)
            except RuntimeError as err:
                raise UserError(f"the feature discriminator in {out / CHECKPOINT_FILE} does not match "
                                f"--feature-d's network") from err
            load_optimizer(opt_P, list(D_feat.heads.parameters()), tensors, "opt_P.", dev)
    else:  # final weights only: G and G_ema start from G_ema, fresh Adam moments
        tensors = load_file(str(out / GENERATOR_FILE), device="cpu")
        G.load_state_dict(tensors)
        G_ema.load_state_dict(tensors)
        D.load_state_dict(load_file(str(out / DISCRIMINATOR_FILE), device="cpu"))


def _init_from(folder: Path, cfg: GANConfig, G, D, G_ema) -> None:
    """Start G and G_ema from `folder`'s generator, D from its discriminator, each widened to cfg."""
    try:
        g_state = widen_generator(load_generator(folder), cfg).state_dict()
        d_state = widen_discriminator(load_discriminator(folder), cfg).state_dict()
    except ValueError as err:
        raise UserError(f"cannot start from {folder}: {err}") from None
    G.load_state_dict(g_state)  # load_state_dict copies onto the modules' own device
    G_ema.load_state_dict(g_state)
    D.load_state_dict(d_state)


def _save_checkpoint(out: Path, G, D, G_ema, opt_G, opt_D, state: _State, cfg: GANConfig, options: dict,
                     D_feat=None, opt_P=None) -> None:
    tensors = {}
    tensors.update(state_tensors(G, "G."))
    tensors.update(state_tensors(D, "D."))
    tensors.update(state_tensors(G_ema, "G_ema."))
    tensors.update(optimizer_tensors(opt_G, list(G.parameters()), "opt_G."))
    tensors.update(optimizer_tensors(opt_D, list(D.parameters()), "opt_D."))
    if D_feat is not None:  # the heads only: the frozen backbone is the --feature-d folder
        tensors.update(state_tensors(D_feat.heads, "P."))
        tensors.update(optimizer_tensors(opt_P, list(D_feat.heads.parameters()), "opt_P."))
    atomic_save_tensors(tensors, out / CHECKPOINT_FILE, {"format": FORMAT, "step": str(state.step)})
    data = dict(format=FORMAT, config=cfg.to_dict(), options=options, step=state.step,
                images_seen=state.images_seen, next_index=state.next_index,
                train_seconds=round(state.train_seconds, 2), runs=state.runs, pl_mean=state.pl_mean,
                saved_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    atomic_write_json(out / CHECKPOINT_JSON, data, sort_keys=True)


def _train_loop(G, D, G_ema, opt_G, opt_D, pool, cfg, state, out, dev, precision, batch, r1_gamma, r1_interval,
                style_mixing_prob, ema_kimg, ema_rampup, checkpoint_every, seconds, t_start, options, progress,
                should_stop, log_every, D_feat=None, opt_P=None, feature_d_weight=1.0, pl_weight=0.0,
                pl_interval=4) -> dict:
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    use_amp = amp_dtype is not None
    scaler_G = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    scaler_D = torch.amp.GradScaler("cuda", enabled=precision == "fp16")

    def autocast():
        return torch.autocast(dev.type, dtype=amp_dtype, enabled=use_amp)

    g_params, ema_params = list(G.parameters()), list(G_ema.parameters())
    num_ws = cfg.num_ws
    ws_index = torch.arange(num_ws, device=dev)[None, :, None]
    zero = torch.zeros([], device=dev)
    sums = {"loss_G": zero.clone(), "loss_D": zero.clone(), "r1": zero.clone()}
    if pl_weight:
        sums["pl"] = zero.clone()
        pl_mean = torch.tensor(state.pl_mean, device=dev)
    if D_feat is not None:
        from generators.gan.feature_d import logistic_loss

        sums.update(loss_P=zero.clone(), loss_G_P=zero.clone())
    counts = dict.fromkeys(sums, 0)
    last_losses: dict = {}
    deadline = t_start + seconds
    t_loop = time.monotonic()
    t_last_ckpt = t_loop
    t_last_log = t_loop
    steps = 0
    stopped_by = "time"
    r1_tick = state.step

    def report(now):
        nonlocal last_losses
        vals = {k: (sums[k] / counts[k]).item() for k in sums if counts[k]}
        for k in sums:
            sums[k].zero_()
            counts[k] = 0
        bad = [k for k, v in vals.items() if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(f"GAN training diverged at step {state.step}: {bad} not finite "
                                     f"(last checkpoint in {out} is intact)")
        last_losses = {**last_losses, **vals}
        if progress is not None:
            info = dict(steps=state.step, kimg=round(state.images_seen / 1000, 1),
                        **{k: float(v) for k, v in last_losses.items()},
                        s_per_step=(now - t_loop) / max(steps, 1))
            progress(min(int(now - t_start), int(seconds)), int(math.ceil(seconds)), **info)

    while True:
        now = time.monotonic()
        if steps > 0:
            if now >= deadline:
                break
            if should_stop is not None and should_stop():
                stopped_by = "should_stop"
                break
        pool.refresh()
        real = pool.batch(batch)

        # ---- generate once; D step on the detached batch, G step through the updated D
        z = torch.randn(batch, cfg.z_dim, device=dev)
        ws = G.mapping(z, update_emas=True)
        if style_mixing_prob > 0:
            cutoff = torch.randint(1, num_ws, [], device=dev) if num_ws > 1 else torch.ones([], dtype=torch.long,
                                                                                                device=dev)
            cutoff = torch.where(torch.rand([], device=dev) < style_mixing_prob, cutoff,
                                 torch.full_like(cutoff, num_ws))
            ws2 = G.mapping(torch.randn_like(z))
            ws = torch.where(ws_index < cutoff, ws, ws2)
        with autocast():
            fake = G.synthesis(ws, noise_mode="random", fused=False)

        D.requires_grad_(True)
        with autocast():
            logits_fake = D(fake.detach())
            logits_real = D(real)
        loss_D = F.softplus(logits_fake.float()).mean() + F.softplus(-logits_real.float()).mean()
        opt_D.zero_grad(set_to_none=True)
        if D_feat is not None:
            D_feat.heads.requires_grad_(True)
            with autocast():
                fake_feats = D_feat.features(fake)
                loss_P = (logistic_loss(D_feat.judge([f.detach() for f in fake_feats]), real=False)
                          + logistic_loss(D_feat(real), real=True))
            opt_P.zero_grad(set_to_none=True)
            scaler_D.scale(loss_D + loss_P).backward()
            scaler_D.step(opt_P)
            sums["loss_P"] += loss_P.detach()
            counts["loss_P"] += 1
        else:
            scaler_D.scale(loss_D).backward()
        scaler_D.step(opt_D)
        scaler_D.update()
        sums["loss_D"] += loss_D.detach()
        counts["loss_D"] += 1

        r1_tick += 1
        if r1_gamma > 0 and r1_tick % r1_interval == 0:  # lazy R1, fully in fp32
            real_r1 = real.detach().requires_grad_(True)
            logits = D(real_r1)
            (grad,) = torch.autograd.grad(logits.sum(), real_r1, create_graph=True)
            penalty = grad.float().square().sum(dim=(1, 2, 3)).mean()
            opt_D.zero_grad(set_to_none=True)
            (penalty * (r1_gamma / 2 * r1_interval) + logits.mean() * 0).backward()
            opt_D.step()
            sums["r1"] += penalty.detach()
            counts["r1"] += 1

        D.requires_grad_(False)
        with autocast():
            logits_gen = D(fake)
        loss_G = F.softplus(-logits_gen.float()).mean()
        sums["loss_G"] += loss_G.detach()  # the pixel discriminator's term, comparable across runs
        counts["loss_G"] += 1
        if D_feat is not None:
            D_feat.heads.requires_grad_(False)
            with autocast():
                loss_G_P = logistic_loss(D_feat.judge(fake_feats), real=True)
            loss_G = loss_G + feature_d_weight * loss_G_P
            sums["loss_G_P"] += loss_G_P.detach()
            counts["loss_G_P"] += 1
        opt_G.zero_grad(set_to_none=True)
        scaler_G.scale(loss_G).backward()
        scaler_G.step(opt_G)
        scaler_G.update()

        if pl_weight and (state.step + 1) % pl_interval == 0:  # lazy path-length penalty, fully in fp32
            ws_pl = G.mapping(torch.randn(max(batch // 2, 1), cfg.z_dim, device=dev))
            img = G.synthesis(ws_pl, noise_mode="random", fused=False)
            y = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
            (grad,) = torch.autograd.grad((img * y).sum(), ws_pl, create_graph=True)
            lengths = grad.square().sum(2).mean(1).sqrt()
            pl_mean = pl_mean.lerp(lengths.mean().detach(), 0.01)
            penalty = (lengths - pl_mean).square().mean()
            opt_G.zero_grad(set_to_none=True)
            (penalty * (pl_weight * pl_interval)).backward()
            opt_G.step()
            sums["pl"] += penalty.detach()
            counts["pl"] += 1

        # ---- G EMA
        state.step += 1
        state.images_seen += batch
        steps += 1
        ema_nimg = ema_kimg * 1000
        if ema_rampup:
            ema_nimg = min(ema_nimg, state.images_seen * ema_rampup)
        beta = 0.5 ** (batch / max(ema_nimg, 1e-8))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, g_params, 1.0 - beta)
            G_ema.mapping.w_avg.copy_(G.mapping.w_avg)

        now = time.monotonic()
        if now - t_last_log >= log_every:
            report(now)
            t_last_log = now
        if checkpoint_every and now - t_last_ckpt >= checkpoint_every and now < deadline:
            state.train_seconds += now - t_last_ckpt
            t_last_ckpt = now
            state.next_index = pool.next_index if pool.num_workers > 0 else state.next_index
            if pl_weight:
                state.pl_mean = float(pl_mean)
            _save_checkpoint(out, G, D, G_ema, opt_G, opt_D, state, cfg, options, D_feat, opt_P)
            _write_samples(G_ema, out, dev)

    now = time.monotonic()
    report(now)
    state.train_seconds += now - t_last_ckpt
    if pl_weight:
        state.pl_mean = float(pl_mean)
    D.requires_grad_(True)
    return dict(steps=steps, train_seconds=now - t_loop, s_per_step=round((now - t_loop) / max(steps, 1), 5),
                stopped_by=stopped_by, losses={k: round(v, 5) for k, v in last_losses.items()},
                images_rendered=pool.images_rendered)
