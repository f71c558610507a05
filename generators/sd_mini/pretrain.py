"""Pretraining "studio-mini": a small but genuine diffusers StableDiffusionPipeline.

Two stages, each time-budgeted (`--vae-seconds`, `--unet-seconds`):
1. AutoencoderKL on plain mini-world images plus generic textures (gratings, grain,
   posterization: never the reference styles), so that it can later encode styles the
   UNet has never seen. MSE + L1 reconstruction, tiny KL (as SD's first stage, without
   the GAN and LPIPS terms). The latent scaling factor is measured, as in SD.
2. UNet2DConditionModel and CLIPTextModel from scratch on cached latents of plain
   images with their captions (10 % empty captions for classifier-free guidance), DDPM
   epsilon objective, EMA weights saved.

Held-out (kind, colour, background) triples never appear (`miniworld.is_held_out`), and no
reference style does: the museum teaches those later.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from generators import miniworld
from generators.diffusion import resolve_device
from generators.diffusion_training import min_snr_weight
from generators.errors import UserError
from generators.sd_mini.config import MiniBaseConfig
from generators.sd_mini.tokenizer import build_tokenizer




def build_vae(cfg: MiniBaseConfig):
    from diffusers import AutoencoderKL

    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.vae_channels),
        layers_per_block=cfg.vae_layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=8,
        sample_size=cfg.resolution,
    )


def build_unet(cfg: MiniBaseConfig):
    """The UNet. With cfg.unet_pooled_text its pooled-prompt embedding starts silent (output norm
    zeroed), so a warm start from a UNet without it begins as that UNet and grows the new path."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=cfg.resolution // 2 ** (len(cfg.vae_channels) - 1),
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=tuple(cfg.unet_channels),
        layers_per_block=cfg.unet_layers_per_block,
        cross_attention_dim=cfg.text_width,
        attention_head_dim=cfg.unet_heads,
        norm_num_groups=cfg.unet_norm_groups,
        addition_embed_type="text" if cfg.unet_pooled_text else None,
        addition_embed_type_num_heads=cfg.unet_heads,
    )
    if cfg.unet_pooled_text:
        with torch.no_grad():
            unet.add_embedding.norm2.weight.zero_()
            unet.add_embedding.norm2.bias.zero_()
    return unet


def build_text_encoder(cfg: MiniBaseConfig, tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.text_width,
        intermediate_size=cfg.text_width * 4,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=cfg.max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=cfg.text_width,
    )
    return CLIPTextModel(config)


def training_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def sampling_scheduler():
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )


# --- data ---------------------------------------------------------------------------------


def _render_one(args):
    seed, index, size, kinds, species, style, family, product = args
    sample = miniworld.generate(seed, index, size=size, held_out=False, kinds=kinds)
    attrs = sample.attributes
    image = sample.image
    if product:
        from generators.sd_mini import style_family

        rng = np.random.default_rng([seed, index, 7])
        caption = style_family.pretraining_caption(attrs, rng)
        if family:
            components = style_family.sample_components(rng)
            image = style_family.apply_components(image, components, rng)
            caption = f"{caption}, {', '.join(components)}"
        return np.asarray(image, dtype=np.uint8), caption
    # Every other bird without its colour word: the prompts that name a class (DataDream's "a
    # sparrow bird", BOB's template) carry no colour, and a species word learnt only after one did
    # not fire without it (docs/lab/2026-12-notebook.md). Other kinds keep their plain caption.
    caption = attrs.species_caption(with_colour=index % 2 == 0) if species else attrs.caption
    if style:
        from styles.reference import apply_style

        # The style's name where a museum puts a style's token: after the content.
        image, caption = apply_style(style, image, seed=index), f"{caption}, {style}"
    return np.asarray(image, dtype=np.uint8), caption


def render_dataset(n: int, seed: int, size: int, workers: int | None = None, species_captions: bool = False,
                   bird_share: float | None = None, caption_styles: tuple[str, ...] = (), style_share: float = 0.0,
                   family_share: float = 0.0, product_captions: bool = False):
    """n images (uint8 N×H×W×3) and their captions; held-out triples excluded.

    bird_share: that fraction of the images are birds (drawn with seed + 1), the rest every kind
    equally often; species_captions: birds' captions name their subclass. style_share: that
    fraction (drawn with seed + 2) rendered in caption_styles in turn, the style's name ending the
    caption; the rest plain. product_captions: captions in the product's prompt forms
    (style_family.pretraining_caption), and family_share of the images (every k-th, spread evenly)
    drawn with style-family components named at the caption's end."""
    n_birds = round(n * bird_share) if bird_share else 0
    n_styled = round(n * style_share) if caption_styles else 0
    if n_birds + n_styled > n:
        raise UserError(f"bird_share {bird_share} and style_share {style_share} add up to more than the whole set")
    if family_share and not product_captions:
        raise UserError("family_share needs product_captions (the family's words follow the product's caption forms)")
    family = lambda j: family_share > 0 and (j * family_share) % 1 + family_share >= 1  # noqa: E731  (spread evenly)
    jobs = [(seed, i, size, miniworld.KINDS, species_captions, None) for i in range(n - n_birds - n_styled)]
    jobs += [(seed + 1, i, size, ("bird",), species_captions, None) for i in range(n_birds)]
    jobs += [(seed + 2, i, size, miniworld.KINDS, species_captions, caption_styles[i % len(caption_styles)])
             for i in range(n_styled)]
    jobs = [job + (family(j), product_captions) for j, job in enumerate(jobs)]
    workers = workers if workers is not None else min(16, os.cpu_count() or 1)
    if workers > 1 and n >= 2000:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            out = pool.map(_render_one, jobs, chunksize=256)
    else:
        out = [_render_one(j) for j in jobs]
    return np.stack([o[0] for o in out]), [o[1] for o in out]


def add_style_words(tokenizer, text_encoder, words) -> list[str]:
    """Make each style name one token, added as a museum adds a style's token (at the vocabulary's
    mean). Returns the names added."""
    from generators.diffusion_training import add_style_token

    missing = [w for w in words if len(tokenizer(w, add_special_tokens=False).input_ids) != 1]
    for word in missing:
        add_style_token(tokenizer, text_encoder, word)
    return missing


def to_tensor(images_uint8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images_uint8).permute(0, 3, 1, 2).contiguous()


def gradient_map(luma: torch.Tensor, generator: torch.Generator, colours: int = 4) -> torch.Tensor:
    """Luminance through a random ramp of `colours` colours (tinted and false-colour palettes).

    luma: B×1×H×W in [0, 1]; returns B×3×H×W in [-1, 1]. Sorting each channel of the random
    colours keeps the ramp monotone, so darker input stays darker output."""
    b, _, h, w = luma.shape
    ramp = torch.rand(b, colours, 3, generator=generator, device=luma.device).sort(dim=1).values
    pos = luma.clamp(0, 1) * (colours - 1)
    lo = pos.floor().clamp(max=colours - 2).long()
    frac = pos - lo
    pick = lambda i: torch.gather(ramp, 1, i.flatten(1)[..., None].expand(-1, -1, 3)).view(b, h, w, 3).permute(0, 3, 1, 2)  # noqa: E731
    return (pick(lo) * (1 - frac) + pick(lo + 1) * frac) * 2 - 1


def dot_screen(x: torch.Tensor, luma: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A printed-dot screen: dots of a random dark ink on a rotated grid of random pitch (4-10 px),
    covering about 1 - luma of the area, on white paper or on the image itself.

    x: B×3×H×W in [-1, 1]; luma: B×1×H×W in [0, 1]; returns B×3×H×W in [-1, 1]."""
    b, _, h, w = x.shape
    r = lambda *s: torch.rand(*s, generator=generator, device=x.device)  # noqa: E731
    py, px = torch.meshgrid(torch.arange(h, device=x.device, dtype=x.dtype), torch.arange(w, device=x.device, dtype=x.dtype),
                            indexing="ij")  # pixel units, so the cells stay square on any aspect ratio
    theta = r(b)[:, None, None] * math.pi
    pitch = (4 + r(b) * 6)[:, None, None]
    along = (px * torch.cos(theta) + py * torch.sin(theta)) / pitch
    across = (-px * torch.sin(theta) + py * torch.cos(theta)) / pitch
    cell = lambda u: torch.remainder(u, 1.0) - 0.5  # noqa: E731
    dist = torch.sqrt(cell(along) ** 2 + cell(across) ** 2)[:, None]  # 0 at dot centres, at most 0.71
    # Dot radius for ink coverage 1 - luma: a round dot of radius r covers πr² of its cell while it
    # fits (r ≤ 0.5, coverage ≤ π/4); darker tones grow it on to the cell's corner (0.71, all ink).
    dark = (1 - luma).clamp(0, 1)
    fits = dark <= math.pi / 4
    radius = torch.where(fits, torch.sqrt(dark / math.pi), 0.5 + 0.21 * (dark - math.pi / 4) / (1 - math.pi / 4))
    ink = (dist < radius).to(x.dtype)
    ink_colour = r(b, 3)[:, :, None, None] * 0.5
    paper = torch.where(r(b)[:, None, None, None] < 0.5, torch.ones_like(x), (x + 1) / 2)
    return ((1 - ink) * paper + ink * ink_colour) * 2 - 1


def generic_textures(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Generic image statistics for the autoencoder, each at random parameters.

    x: B×3×H×W in [-1, 1]. A third of the batch is left as it is; the rest gets one of gratings,
    grain, posterize, grey, blur, a `gradient_map` or a `dot_screen`. They are deliberately not
    the reference styles' renderers: they only widen what the autoencoder can reconstruct, so
    that the museum can teach styles later.
    """
    b, _, h, w = x.shape
    dev = x.device
    r = lambda *s: torch.rand(*s, generator=generator, device=dev)  # noqa: E731
    choice = (r(b) * 15).long()  # 0-4: unchanged
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h, device=dev), torch.linspace(-1, 1, w, device=dev), indexing="ij")
    theta = r(b) * math.pi
    along = xx[None] * torch.cos(theta)[:, None, None] + yy[None] * torch.sin(theta)[:, None, None]
    freq = 4 + r(b) * 28
    grating = torch.sin(along * freq[:, None, None])[:, None] * (0.2 + 0.5 * r(b))[:, None, None, None]
    luma = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3] + 1) / 2  # Rec. 601, in [0, 1]
    grey = (luma * 2 - 1).expand_as(x)
    levels = (2 + (r(b) * 4).long()).float()[:, None, None, None]
    posterized = torch.round((x + 1) / 2 * (levels - 1)) / (levels - 1) * 2 - 1
    noise = (torch.rand(x.shape, generator=generator, device=dev) - 0.5) * 0.6
    blurred = F.avg_pool2d(x, 3, 1, 1)
    mapped = gradient_map(luma, generator)
    screened = dot_screen(x, luma, generator)
    variants = {5: x + grating, 6: grey, 7: posterized, 8: grey + grating, 9: x + noise, 10: blurred,
                11: mapped, 12: mapped, 13: screened, 14: screened}
    out = x.clone()
    for key, v in variants.items():
        out = torch.where((choice == key)[:, None, None, None], v, out)
    return out.clamp(-1, 1)


# --- training -----------------------------------------------------------------------------


class EMA:
    """Exponential moving average of a module's float parameters."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = [p.detach().clone().float() for p in module.parameters()]

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in module.parameters()], 1 - decay)

    @torch.no_grad()
    def copy_to(self, module: torch.nn.Module) -> None:
        for s, p in zip(self.shadow, module.parameters()):
            p.copy_(s.to(p.dtype))


def lr_factor(step: int, warmup: int, elapsed_fraction: float, schedule: str = "cosine") -> float:
    """Linear warmup over steps, then cosine to 10 % over the run's time budget (or constant)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, elapsed_fraction)))


def _set_lr(opt, base_lr: float, factor: float) -> None:
    for group in opt.param_groups:
        group["lr"] = base_lr * factor


def _autocast(device: torch.device, precision: str):
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


def train_vae(vae, images: torch.Tensor, cfg: MiniBaseConfig, seconds: float, device, precision, log, should_stop,
              decoder_only: bool = False):
    """Stage 1. images: uint8 N×3×H×W on `device`.

    decoder_only: fine-tune the decoder with the encoder frozen. The latents do not move, so a
    UNet trained on them stays valid; this sharpens reconstructions (colours) of a trained base."""
    vae.train().to(device)
    vae.encoder.requires_grad_(not decoder_only)
    vae.quant_conv.requires_grad_(not decoder_only)
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.vae_lr, weight_decay=0.0)
    gen = torch.Generator(device).manual_seed(cfg.data_seed)
    start, step = time.time(), 0
    while time.time() - start < seconds and not should_stop():
        idx = torch.randint(0, images.shape[0], (cfg.vae_batch,), generator=gen, device=device)
        x = images[idx].float() / 127.5 - 1
        x = generic_textures(x, gen)
        with _autocast(device, precision):
            with torch.set_grad_enabled(not decoder_only):
                posterior = vae.encode(x).latent_dist
                z = posterior.sample()
            rec = vae.decode(z).sample
        rec = rec.float()
        loss_rec = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x)
        kl = posterior.kl().mean() / (x.shape[1] * x.shape[2] * x.shape[3])
        loss = loss_rec + (0.0 if decoder_only else 1e-6) * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        _set_lr(opt, cfg.vae_lr, lr_factor(step, 200, (time.time() - start) / seconds))
        opt.step()
        step += 1
        if step % 100 == 0:
            log(stage="decoder" if decoder_only else "vae", step=step, loss=loss_rec.item(), seconds=round(time.time() - start, 1))
    vae.requires_grad_(False)
    vae.eval()
    return step


@torch.no_grad()
def copy_matching_weights(source: torch.nn.Module, target: torch.nn.Module) -> tuple[int, list[str]]:
    """Copy every tensor of source's state dict into target where name and shape match.
    Returns (number copied, names left as initialised)."""
    src, dst = source.state_dict(), target.state_dict()
    fresh = [k for k in dst if k not in src or src[k].shape != dst[k].shape]
    target.load_state_dict({k: (dst[k] if k in fresh else src[k]) for k in dst})
    return len(dst) - len(fresh), fresh


@torch.no_grad()
def encode_dataset(vae, images: torch.Tensor, device, batch: int = 512):
    """Posterior mean and std of every image (cached once; sampled per training step)."""
    means, stds = [], []
    for i in range(0, images.shape[0], batch):
        x = images[i : i + batch].to(device).float() / 127.5 - 1
        dist = vae.encode(x).latent_dist
        means.append(dist.mean.float())
        stds.append(dist.std.float())
    return torch.cat(means), torch.cat(stds)


TRAIN_STATE = "train_state.safetensors"  # beside the pipeline: what an exact resume needs


def train_unet(unet, text_encoder, tokenizer, means, stds, captions, cfg, seconds, device, precision, log, should_stop, scaling,
               on_checkpoint=None, state: dict | None = None):
    """Stage 2: joint UNet + text encoder training on cached latents; returns steps and EMAs.

    Loss: epsilon MSE weighted by min(SNR, γ)/SNR (Min-SNR-γ). on_checkpoint(step, ema_unet,
    ema_text, optimizer) is called every cfg.save_every_seconds so that a kill loses little.
    state: a previous chunk's `train_state_tensors` (raw weights, AdamW moments, the global step):
    the run continues it exactly, with the EMA started from the saved (EMA) pipeline weights."""
    unet.train().to(device)
    text_encoder.train().to(device)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=1e-2)
    ema_unet, ema_text = EMA(unet, cfg.ema_decay), EMA(text_encoder, cfg.ema_decay)
    first_step = 0
    if state is not None:
        from generators.gan.pretrain import _module_state
        from generators.optim_state import load_optimizer

        unet.load_state_dict(_module_state(state, "unet."))
        text_encoder.load_state_dict(_module_state(state, "text."))
        load_optimizer(opt, params, state, "opt.", device)
        first_step = int(state["global_step"])
    noise_sched = training_scheduler()
    alphas = noise_sched.alphas_cumprod.to(device)
    ids = tokenizer(captions, padding="max_length", max_length=cfg.max_length, truncation=True, return_tensors="pt").input_ids.to(device)
    empty = tokenizer([""], padding="max_length", max_length=cfg.max_length, return_tensors="pt").input_ids.to(device)
    gen = torch.Generator(device).manual_seed(cfg.data_seed + 1 + first_step)
    start, step = time.time(), 0
    last_save = start
    while time.time() - start < seconds and not should_stop():
        idx = torch.randint(0, means.shape[0], (cfg.unet_batch,), generator=gen, device=device)
        eps0 = torch.randn(means[idx].shape, generator=gen, device=device)
        latents = (means[idx] + stds[idx] * eps0) * scaling
        tok = ids[idx]
        drop = torch.rand(cfg.unet_batch, generator=gen, device=device) < cfg.caption_dropout
        tok = torch.where(drop[:, None], empty.expand_as(tok), tok)
        noise = torch.randn(latents.shape, generator=gen, device=device)
        t = torch.randint(0, 1000, (cfg.unet_batch,), generator=gen, device=device)
        noisy = noise_sched.add_noise(latents, noise, t)
        with _autocast(device, precision):
            cond = text_encoder(tok)[0]
            pred = unet(noisy, t, encoder_hidden_states=cond).sample
        weight = min_snr_weight(alphas, t, cfg.min_snr_gamma)
        loss = (F.mse_loss(pred.float(), noise, reduction="none").mean((1, 2, 3)) * weight).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        _set_lr(opt, cfg.unet_lr, lr_factor(first_step + step, cfg.warmup_steps, (time.time() - start) / seconds,
                                            cfg.lr_schedule))
        opt.step()
        ema_unet.update(unet, first_step + step)
        ema_text.update(text_encoder, first_step + step)
        step += 1
        if step % 100 == 0:
            log(stage="unet", step=step, loss=float(loss), seconds=round(time.time() - start, 1))
        if on_checkpoint and time.time() - last_save > cfg.save_every_seconds:
            on_checkpoint(step, ema_unet, ema_text, opt)
            last_save = time.time()
    return step, ema_unet, ema_text, opt


def train_state_tensors(unet, text_encoder, opt, global_step: int) -> dict[str, torch.Tensor]:
    """Raw (non-EMA) weights, AdamW moments and the global step: an exact resume's state."""
    from generators.optim_state import optimizer_tensors

    params = list(unet.parameters()) + list(text_encoder.parameters())
    out = {f"unet.{k}": v.detach().to("cpu").contiguous() for k, v in unet.state_dict().items()}
    out.update({f"text.{k}": v.detach().to("cpu").contiguous() for k, v in text_encoder.state_dict().items()})
    out.update(optimizer_tensors(opt, params, "opt."))
    out["global_step"] = torch.tensor(global_step, dtype=torch.int64)
    return out


def save_pipeline(out_dir: Path, vae, text_encoder, tokenizer, unet) -> None:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae.to("cpu", torch.float32),
        text_encoder=text_encoder.to("cpu", torch.float32),
        tokenizer=tokenizer,
        unet=unet.to("cpu", torch.float32),
        scheduler=sampling_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    tmp = out_dir.with_name(out_dir.name + ".partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    pipe.save_pretrained(tmp, safe_serialization=True)
    from generators.files import honour_umask

    for weights in tmp.rglob("*.safetensors"):  # safetensors writes them 0600
        honour_umask(weights)
    return tmp


def pretrain_base(
    out_dir,
    overrides: dict | None = None,
    vae_seconds: float = 600,
    unet_seconds: float = 3600,
    device: str = "auto",
    precision: str = "fp32",
    seed: int = 0,
    resume: bool = False,
    workers: int | None = None,
    progress=None,
    should_stop=None,
    log_file=None,
    decoder_seconds: float = 0,
    init_from=None,
) -> dict:
    """Train studio-mini into `out_dir` (a StableDiffusionPipeline folder). Returns the options.

    `overrides` sets MiniBaseConfig fields (on resume, only training fields make sense).

    With resume=True the pipeline already in `out_dir` is loaded and its UNet and text
    encoder trained further (the autoencoder stays as it is, since the UNet depends on its
    latents); the new options are appended to training_options.json's history.
    init_from: another studio-mini pipeline whose UNet and text encoder weights start this run
    wherever the shapes match (a warm start after the autoencoder changed: the UNet's
    latent-facing convolutions then start fresh, and its pooled-prompt pathway too if the source
    had none). With resume=True and overrides {"unet_pooled_text": True} on a base without that
    pathway, the UNet is rebuilt with it around the saved weights (recorded as warm_start.upgrade).
    decoder_seconds > 0 then fine-tunes the autoencoder's decoder alone (encoder frozen, so the
    latents and the UNet stay valid); unet_seconds = 0 skips the UNet stage.
    """
    import shutil

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    out_dir = Path(out_dir)
    should_stop = should_stop or (lambda: False)
    dev = resolve_device(device)
    torch.manual_seed(seed)
    history = []
    unet_upgrade = None
    if resume:
        if not (out_dir / "model_index.json").exists():
            raise FileNotFoundError(f"--resume: {out_dir} holds no pipeline (model_index.json) to continue from")
        opts = json.loads((out_dir / "training_options.json").read_text())
        cfg = replace(MiniBaseConfig.from_dict(opts["config"]), **(overrides or {}))
        history = opts.get("history", []) + [{k: v for k, v in opts.items() if k != "history"}]
        tokenizer = CLIPTokenizer.from_pretrained(out_dir / "tokenizer")
        vae = AutoencoderKL.from_pretrained(out_dir / "vae")
        unet = UNet2DConditionModel.from_pretrained(out_dir / "unet")
        text_encoder = CLIPTextModel.from_pretrained(out_dir / "text_encoder")
        vae_seconds = 0
        has_pooled = unet.config.get("addition_embed_type") == "text"
        if has_pooled and not cfg.unet_pooled_text:
            raise UserError(f"{out_dir}'s UNet has the pooled-prompt pathway; dropping it (--no-pooled-text) would "
                            f"discard what it learnt: train a new base without it instead")
        if not has_pooled and cfg.unet_pooled_text and "unet_pooled_text" in (overrides or {}):
            # An architecture change on resume: a new UNet, warm-started from the saved one.
            upgraded = build_unet(cfg)
            copied, fresh = copy_matching_weights(unet, upgraded)
            unet = upgraded
            unet_upgrade = {"from": str(out_dir), "unet": {"copied": copied, "fresh": fresh},
                            "why": f"unet_pooled_text {has_pooled} -> {cfg.unet_pooled_text}"}
        else:
            cfg = replace(cfg, unet_pooled_text=has_pooled)  # what the saved UNet is
    else:
        if (out_dir / "model_index.json").exists():
            raise FileExistsError(f"{out_dir} already holds a pipeline; pass --resume to train it further or pick a new --out")
        cfg = replace(MiniBaseConfig(), **(overrides or {}))
        tok_dir = out_dir.with_name(out_dir.name + ".tokenizer")
        tokenizer = build_tokenizer(miniworld.caption_words(), tok_dir, cfg.max_length)
        shutil.rmtree(tok_dir, ignore_errors=True)
        vae, unet, text_encoder = build_vae(cfg), build_unet(cfg), build_text_encoder(cfg, tokenizer)

    warm_start = {"upgrade": unet_upgrade} if unet_upgrade else None
    if init_from is not None:
        warm_start = {**(warm_start or {}), "from": str(init_from)}
        if (Path(init_from) / "training_options.json").is_file():  # how the warm start itself was made
            warm_start["from_training_options"] = json.loads((Path(init_from) / "training_options.json").read_text())
        for name, module, cls in (("unet", unet, UNet2DConditionModel), ("text_encoder", text_encoder, CLIPTextModel)):
            copied, fresh = copy_matching_weights(cls.from_pretrained(Path(init_from) / name), module)
            warm_start[name] = {"copied": copied, "fresh": fresh}

    if cfg.bird_share is not None and not 0 < cfg.bird_share <= 1:
        raise UserError(f"bird_share (--bird-share) must be in (0, 1], got {cfg.bird_share}")
    styles_added = []
    if cfg.style_share and not cfg.caption_styles:
        raise UserError(f"style_share {cfg.style_share} names no styles: pass --caption-styles too")
    if cfg.caption_styles:
        from styles.reference import REFERENCE_STYLES

        unknown = [n for n in cfg.caption_styles if n not in REFERENCE_STYLES]
        if unknown:
            raise UserError(f"caption_styles {unknown} are not reference styles; choose from {', '.join(REFERENCE_STYLES)}")
        if not 0 < cfg.style_share < 1:
            raise UserError(f"style_share must be in (0, 1) with caption_styles, got {cfg.style_share}")
        styles_added = add_style_words(tokenizer, text_encoder, cfg.caption_styles)
    if not 0 <= cfg.family_share <= 1:
        raise UserError(f"family_share must be in [0, 1], got {cfg.family_share}")
    if cfg.lr_schedule not in ("cosine", "constant"):
        raise UserError(f"lr_schedule must be cosine or constant, got {cfg.lr_schedule!r}")
    state = None  # an architecture change or a warm start begins a fresh optimizer
    if resume and unet_upgrade is None and init_from is None and (out_dir / TRAIN_STATE).is_file():
        from safetensors.torch import load_file

        state = load_file(out_dir / TRAIN_STATE)
    if cfg.product_captions:
        from generators.sd_mini import style_family

        words_added = add_style_words(tokenizer, text_encoder, style_family.words() + list(style_family.CATEGORY_WORDS))
        if words_added and state is not None:
            raise UserError(f"{out_dir}'s {TRAIN_STATE} predates the words {words_added}; move it aside to start the "
                            f"optimizer afresh")
        styles_added += words_added
    global_step = int(state["global_step"]) if state is not None else 0

    log_lines = []

    def log(**info):
        log_lines.append(info)
        if log_file:
            with open(log_file, "a") as fh:
                fh.write(json.dumps(info) + "\n")
        if progress:
            progress(info.get("step", 0), 0, **{k: v for k, v in info.items() if k != "step"})

    t0 = time.time()
    images_np, captions = render_dataset(cfg.n_images, cfg.data_seed + len(history) * 7919, cfg.resolution, workers,
                                         cfg.species_captions, cfg.bird_share, tuple(cfg.caption_styles), cfg.style_share,
                                         cfg.family_share, cfg.product_captions)
    images = to_tensor(images_np).to(dev)
    log(stage="data", step=0, images=len(captions), seconds=round(time.time() - t0, 1))

    vae_steps = decoder_steps = 0
    if vae_seconds > 0:
        vae_steps = train_vae(vae, images, cfg, vae_seconds, dev, precision, log, should_stop)
    if decoder_seconds > 0:
        decoder_steps = train_vae(vae, images, cfg, decoder_seconds, dev, precision, log, should_stop, decoder_only=True)
    vae.to(dev).eval()
    if unet_seconds > 0 or not resume:
        means, stds = encode_dataset(vae, images, dev)
    if resume:
        scaling = float(vae.config.scaling_factor)
    else:
        scaling = float(1.0 / means.std())
        vae.register_to_config(scaling_factor=scaling)
    del images

    def write_base(unet_steps: int, ema_unet: EMA, ema_text: EMA, final: bool, opt=None) -> dict:
        """Save the EMA weights as the pipeline in out_dir, and with `opt` the exact-resume state
        beside it (swapped in whole: a kill keeps the old one)."""
        import copy

        unet_out, text_out = copy.deepcopy(unet).to("cpu"), copy.deepcopy(text_encoder).to("cpu")
        ema_unet.copy_to(unet_out)
        ema_text.copy_to(text_out)
        tmp = save_pipeline(out_dir, copy.deepcopy(vae), text_out.eval(), tokenizer, unet_out.eval())
        options = {
            "command": "studio " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("studio") else " ".join(sys.argv),
            "config": asdict(cfg),
            "vae_seconds": vae_seconds,
            "unet_seconds": unet_seconds,
            "vae_steps": vae_steps,
            "decoder_seconds": decoder_seconds,
            "decoder_steps": decoder_steps,
            "unet_steps": unet_steps,
            "global_step": global_step + unet_steps if opt is not None else None,
            "unet_images_seen": unet_steps * cfg.unet_batch,
            "latent_scaling_factor": scaling,
            "wall_seconds": round(time.time() - t0, 1),
            "finished": final,
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({platform.machine()}, {os.cpu_count()} cores)",
            "precision": precision,
            "seed": seed,
            "torch": torch.__version__,
            "resumed": resume,
            "warm_start": warm_start,
            "tokens_added": styles_added,
            "final_losses": [line for line in log_lines if line.get("stage") in ("vae", "unet")][-2:],
            "history": history,
        }
        (tmp / "training_options.json").write_text(json.dumps(options, indent=2))
        if opt is not None:
            from generators.files import save_tensors

            save_tensors(train_state_tensors(unet, text_encoder, opt, global_step + unet_steps), tmp / TRAIN_STATE)
        elif state is not None:  # a run without UNet steps keeps the state it resumed from
            shutil.copy2(out_dir / TRAIN_STATE, tmp / TRAIN_STATE)
        if out_dir.exists():
            old = out_dir.with_name(out_dir.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old)
        else:
            tmp.rename(out_dir)
        return options

    if unet_seconds > 0:
        unet_steps, ema_unet, ema_text, opt = train_unet(
            unet, text_encoder, tokenizer, means, stds, captions, cfg, unet_seconds, dev, precision, log, should_stop,
            scaling, on_checkpoint=lambda step, eu, et, o: write_base(step, eu, et, final=False, opt=o), state=state,
        )
    else:
        unet_steps, ema_unet, ema_text, opt = 0, EMA(unet, 0.0), EMA(text_encoder, 0.0), None
    options = write_base(unet_steps, ema_unet, ema_text, final=True, opt=opt)
    return options
