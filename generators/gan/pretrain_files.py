"""The files of a gan-mini pretraining run: its resumable checkpoint, samples and training options.

In the run's folder, beside the gan-mini files (`generators.gan.folder`):

    checkpoint.safetensors   G., D., G_ema. state dicts and the Adam moments opt_G., opt_D. (with a
                             feature discriminator also its heads P. and opt_P.; its frozen backbone
                             stays in its own folder); metadata: format, step
    checkpoint.json          step, config, options and the counters of `TrainingState`
    samples.png              an 8x8 grid of G_ema samples from SAMPLE_SEED
    training_options.json    the summary `pretrain_gan` returns (written at the end)

All are written atomically. No pickle anywhere: optimizer moments are safetensors tensors.
A run resumes from the checkpoint, or from the final files alone (generator, discriminator and
training_options.json: G and G_ema start from G_ema, with fresh Adam moments).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from generators.errors import UserError
from generators.files import CHECKPOINT_FILE, CHECKPOINT_JSON, atomic_save_tensors, atomic_write_bytes, atomic_write_json
from generators.gan.folder import (
    DISCRIMINATOR_FILE,
    FORMAT,
    GENERATOR_FILE,
    load_discriminator,
    load_generator,
    read_config,
    state_tensors,
)
from generators.gan.sampling import image_grid, seeded_z
from generators.gan.stylegan2 import Discriminator, GANConfig, Generator
from generators.gan.widening import widen_discriminator, widen_generator
from generators.optim_state import load_optimizer, optimizer_tensors

OPTIONS_FILE = "training_options.json"
SAMPLES_FILE = "samples.png"
SAMPLE_SEED = 20240


@dataclass
class TrainingState:
    """The counters a run carries over to the next (checkpoint.json, training_options.json)."""

    step: int = 0
    images_seen: int = 0
    next_index: int = 0
    train_seconds: float = 0.0
    runs: int = 0
    pl_mean: float = 0.0  # the path-length regularizer's running target a (StyleGAN2 Eq. 4)


@dataclass
class Networks:
    """What pretraining trains: G, D, G's EMA, their Adam optimizers and the optional feature discriminator."""

    G: Generator
    D: Discriminator
    G_ema: Generator
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    D_feat: torch.nn.Module | None = None  # generators.gan.feature_d.FeatureDiscriminator
    opt_P: torch.optim.Optimizer | None = None


def module_state(tensors: dict, prefix: str) -> dict:
    """The entries of `tensors` under `prefix` (e.g. "G_ema."), the prefix removed: one module's state dict."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def read_resume_state(out: Path, has_checkpoint: bool) -> tuple[GANConfig, TrainingState]:
    """The config and counters a resumed run starts from: checkpoint.json, else config.json + training_options.json."""
    state = TrainingState()
    if has_checkpoint:
        ckpt_json = out / CHECKPOINT_JSON
        ckpt = json.loads(ckpt_json.read_text())
        if ckpt.get("format") != FORMAT:
            raise UserError(f"{ckpt_json} is not a gan-mini checkpoint")
        for k in ("step", "images_seen", "next_index", "train_seconds", "runs", "pl_mean"):
            setattr(state, k, type(getattr(state, k))(ckpt.get(k, 0)))
        return GANConfig.from_dict(ckpt["config"]), state
    cfg = read_config(out)
    opts_path = out / OPTIONS_FILE
    if opts_path.is_file():
        prev = json.loads(opts_path.read_text())
        state.step, state.images_seen = int(prev.get("steps", 0)), int(prev.get("images_seen", 0))
        state.next_index = int(prev.get("next_index", 0))
        state.train_seconds = float(prev.get("train_seconds_total", 0.0))
        state.runs = int(prev.get("runs", 0))
        state.pl_mean = float(prev.get("pl_mean", 0.0))
    return cfg, state


def load_networks(out: Path, has_checkpoint: bool, nets: Networks, device) -> None:
    """Load a resumed run's weights (and, from a checkpoint, its Adam moments) into `nets`."""
    from safetensors.torch import load_file

    if has_checkpoint:
        tensors = load_file(str(out / CHECKPOINT_FILE), device="cpu")
        try:
            nets.G.load_state_dict(module_state(tensors, "G."))
            nets.D.load_state_dict(module_state(tensors, "D."))
            nets.G_ema.load_state_dict(module_state(tensors, "G_ema."))
        except RuntimeError as err:
            raise UserError(f"{out / CHECKPOINT_FILE} does not match its checkpoint.json config") from err
        load_optimizer(nets.opt_G, list(nets.G.parameters()), tensors, "opt_G.", device)
        load_optimizer(nets.opt_D, list(nets.D.parameters()), tensors, "opt_D.", device)
        heads = module_state(tensors, "P.")
        if nets.D_feat is not None and heads:  # a run that had feature heads continues with them
            try:
                nets.D_feat.heads.load_state_dict(heads)
            except RuntimeError as err:
                raise UserError(f"the feature discriminator in {out / CHECKPOINT_FILE} does not match "
                                f"--feature-d's network") from err
            load_optimizer(nets.opt_P, list(nets.D_feat.heads.parameters()), tensors, "opt_P.", device)
    else:  # final weights only: G and G_ema start from G_ema, fresh Adam moments
        tensors = load_file(str(out / GENERATOR_FILE), device="cpu")
        nets.G.load_state_dict(tensors)
        nets.G_ema.load_state_dict(tensors)
        nets.D.load_state_dict(load_file(str(out / DISCRIMINATOR_FILE), device="cpu"))


def start_from_folder(folder: Path, cfg: GANConfig, nets: Networks) -> None:
    """Start G and G_ema from `folder`'s generator, D from its discriminator, each widened to cfg."""
    try:
        g_state = widen_generator(load_generator(folder), cfg).state_dict()
        d_state = widen_discriminator(load_discriminator(folder), cfg).state_dict()
    except ValueError as err:
        raise UserError(f"cannot start from {folder}: {err}") from None
    nets.G.load_state_dict(g_state)  # load_state_dict copies onto the modules' own device
    nets.G_ema.load_state_dict(g_state)
    nets.D.load_state_dict(d_state)


def save_checkpoint(out: Path, nets: Networks, state: TrainingState, cfg: GANConfig, options: dict) -> None:
    tensors = {}
    tensors.update(state_tensors(nets.G, "G."))
    tensors.update(state_tensors(nets.D, "D."))
    tensors.update(state_tensors(nets.G_ema, "G_ema."))
    tensors.update(optimizer_tensors(nets.opt_G, list(nets.G.parameters()), "opt_G."))
    tensors.update(optimizer_tensors(nets.opt_D, list(nets.D.parameters()), "opt_D."))
    if nets.D_feat is not None:  # the heads only: the frozen backbone is the --feature-d folder
        tensors.update(state_tensors(nets.D_feat.heads, "P."))
        tensors.update(optimizer_tensors(nets.opt_P, list(nets.D_feat.heads.parameters()), "opt_P."))
    atomic_save_tensors(tensors, out / CHECKPOINT_FILE, {"format": FORMAT, "step": str(state.step)})
    data = dict(format=FORMAT, config=cfg.to_dict(), options=options, step=state.step,
                images_seen=state.images_seen, next_index=state.next_index,
                train_seconds=round(state.train_seconds, 2), runs=state.runs, pl_mean=state.pl_mean,
                saved_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    atomic_write_json(out / CHECKPOINT_JSON, data, sort_keys=True)


def write_samples(G_ema: Generator, out: Path, device) -> None:
    """samples.png: 64 G_ema samples from SAMPLE_SEED (constant noise) in an 8x8 grid."""
    with torch.no_grad():
        z = seeded_z(64, G_ema.z_dim, SAMPLE_SEED, device)
        imgs = G_ema(z, truncation_psi=1.0, noise_mode="const", clamp=True, fused_modconv=False)
    buf = io.BytesIO()
    image_grid(imgs, nrow=8).save(buf, format="PNG")
    atomic_write_bytes(out / SAMPLES_FILE, buf.getvalue())
