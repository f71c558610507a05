"""Pretraining "studio-mini": a small but genuine diffusers StableDiffusionPipeline.

Two stages, each time-budgeted (`--vae-seconds`, `--unet-seconds`):
1. AutoencoderKL on plain mini-world images plus generic textures (gratings, grain,
   posterization: never the reference styles), so that it can later encode styles the
   UNet has never seen. MSE + L1 reconstruction, tiny KL (as SD's first stage, without
   the GAN and LPIPS terms; cfg.vae_detail adds a phase-free match of local high-frequency
   energy in their place). The latent scaling factor is measured, as in SD.
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
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from generators import miniworld
from generators.diffusion import resolve_device
from generators.diffusion_training import min_snr_weight, offset_noise
from generators.config import command_line
from generators.errors import UserError
from generators.precision import autocast
from generators.run import Run, as_run
from generators.sd_mini.config import MiniBaseConfig
from generators.sd_mini.data import encode_dataset, generic_textures, render_dataset, to_tensor
from generators.sd_mini.models import (add_style_words, build_text_encoder, build_unet, build_vae, copy_matching_weights,
                                       save_pipeline, training_scheduler)
from generators.sd_mini.tokenizer import build_tokenizer


# --- training -----------------------------------------------------------------------------


def ema_of(module: torch.nn.Module, decay: float):
    """diffusers' EMAModel over the module's parameters (decay warmup (1 + s) / (10 + s), capped at
    `decay`; a resumed chunk sets its optimization_step to the global step so it does not warm up again)."""
    from diffusers.training_utils import EMAModel

    return EMAModel(module.parameters(), decay=decay, foreach=True)


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


def local_detail(x: torch.Tensor) -> list[torch.Tensor]:
    """Local high-frequency energy: mean |x − blur₃ₓ₃(x)| over 4×4 blocks, per channel, at full and
    half resolution. It says how much grain or fine line a region holds, not where each grain is."""
    levels = []
    for _ in range(2):
        high = x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
        levels.append(F.avg_pool2d(high.abs(), 4))
        x = F.avg_pool2d(x, 2)
    return levels


def detail_loss(rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 between the local_detail levels of reconstruction and input (cfg.vae_detail weighs it)."""
    return sum(F.l1_loss(a, b) for a, b in zip(local_detail(rec), local_detail(x)))


def train_vae(vae, images: torch.Tensor, cfg: MiniBaseConfig, seconds: float, device, precision, log, should_stop,
              decoder_only: bool = False, anchor: float = 0.0):
    """Stage 1. images: uint8 N×3×H×W on `device`.

    decoder_only: fine-tune the decoder with the encoder frozen. The latents do not move, so a
    UNet trained on them stays valid; this sharpens reconstructions (colours) of a trained base.
    anchor > 0 (continuing a trained autoencoder): add anchor · MSE between the posterior means
    and those of the autoencoder as it was at the start, both times the latent scaling factor."""
    import copy

    reference = None
    if anchor > 0 and not decoder_only:
        reference = copy.deepcopy(vae).to(device).eval().requires_grad_(False)
        scaling = float(vae.config.scaling_factor)
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
        with autocast(device, precision):
            with torch.set_grad_enabled(not decoder_only):
                posterior = vae.encode(x).latent_dist
                z = posterior.sample()
            rec = vae.decode(z).sample
        rec = rec.float()
        loss_rec = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x)
        kl = posterior.kl().mean() / (x.shape[1] * x.shape[2] * x.shape[3])
        loss = loss_rec + (0.0 if decoder_only else 1e-6) * kl
        if cfg.vae_detail > 0:
            loss = loss + cfg.vae_detail * detail_loss(rec, x)
        if reference is not None:
            with torch.no_grad():
                before = reference.encode(x).latent_dist.mean
            loss = loss + anchor * F.mse_loss(posterior.mean.float() * scaling, before.float() * scaling)
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


TRAIN_STATE = "train_state.safetensors"  # beside the pipeline: what an exact resume needs


def trained_parameters(unet, text_encoder) -> list[torch.nn.Parameter]:
    """The UNet stage's parameters in the optimizer's order: its saved moments are keyed by position here."""
    return list(unet.parameters()) + list(text_encoder.parameters())


def train_unet(unet, text_encoder, tokenizer, means, stds, captions, cfg, seconds, device, precision, log, should_stop, scaling,
               on_checkpoint=None, state: dict | None = None):
    """Stage 2: joint UNet + text encoder training on cached latents; returns steps and EMAs.

    Loss: epsilon MSE weighted by min(SNR, γ)/SNR (Min-SNR-γ). on_checkpoint(step, ema_unet,
    ema_text, optimizer) is called every cfg.save_every_seconds so that a kill loses little.
    state: a previous chunk's `train_state_tensors` (raw weights, AdamW moments, the global step):
    the run continues it exactly, with the EMA started from the saved (EMA) pipeline weights."""
    unet.train().to(device)
    text_encoder.train().to(device)
    params = trained_parameters(unet, text_encoder)
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=1e-2)
    # the EMA starts from the weights as loaded: a resumed chunk's saved (EMA) pipeline
    ema_unet, ema_text = ema_of(unet, cfg.ema_decay), ema_of(text_encoder, cfg.ema_decay)
    first_step = 0
    if state is not None:
        from generators.optim_state import load_optimizer

        for prefix, module in (("unet.", unet), ("text.", text_encoder)):
            module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        load_optimizer(opt, params, state, "opt.", device)
        first_step = int(state["global_step"])
        ema_unet.optimization_step = ema_text.optimization_step = first_step
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
        noise = offset_noise(latents.shape, cfg.noise_offset, gen, device)
        t = torch.randint(0, 1000, (cfg.unet_batch,), generator=gen, device=device)
        noisy = noise_sched.add_noise(latents, noise, t)
        with autocast(device, precision):
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
        ema_unet.step(unet.parameters())
        ema_text.step(text_encoder.parameters())
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

    params = trained_parameters(unet, text_encoder)
    out = {f"unet.{k}": v.detach().to("cpu").contiguous() for k, v in unet.state_dict().items()}
    out.update({f"text.{k}": v.detach().to("cpu").contiguous() for k, v in text_encoder.state_dict().items()})
    out.update(optimizer_tensors(opt, params, "opt."))
    out["global_step"] = torch.tensor(global_step, dtype=torch.int64)
    return out


def grow_vocabulary_state(state: dict, unet, text_encoder) -> dict:
    """A train state saved before words were added to the vocabulary, continued with them: the
    text embedding's raw rows keep their saved values and the new rows start where
    `add_style_words` put them (the vocabulary's mean), with zero Adam moments, so the old rows
    resume exactly."""
    embedding = text_encoder.get_input_embeddings().weight
    name = next(n for n, p in text_encoder.named_parameters() if p is embedding)
    saved = state[f"text.{name}"]
    if saved.shape[0] == embedding.shape[0]:
        return state
    index = next(i for i, p in enumerate(trained_parameters(unet, text_encoder)) if p is embedding)
    grown = dict(state)
    grown[f"text.{name}"] = torch.cat([saved, embedding.detach()[saved.shape[0]:].to(saved)])
    for moment in ("exp_avg", "exp_avg_sq"):
        key = f"opt.{index}.{moment}"
        if key in grown:
            pad = grown[key].new_zeros((embedding.shape[0] - saved.shape[0], *grown[key].shape[1:]))
            grown[key] = torch.cat([grown[key], pad])
    return grown


def pretrain_base(
    out_dir,
    overrides: dict | None = None,
    vae_seconds: float | None = None,
    unet_seconds: float = 3600,
    device: str = "auto",
    precision: str = "fp32",
    seed: int = 0,
    resume: bool = False,
    workers: int | None = None,
    run: Run | None = None,
    log_file=None,
    decoder_seconds: float = 0,
    init_from=None,
) -> dict:
    """Train studio-mini into `out_dir` (a StableDiffusionPipeline folder). Returns the options.

    `overrides` sets MiniBaseConfig fields (on resume, only training fields make sense).

    With resume=True the pipeline already in `out_dir` is loaded and its UNet and text
    encoder trained further; the new options are appended to training_options.json's history.
    The autoencoder stays as it is (the UNet depends on its latents) unless vae_seconds > 0 is
    given: it then trains on from its weights with the latent anchor (cfg.vae_anchor), keeping
    its scaling factor, and the UNet stage that follows learns the moved latents.
    vae_seconds None: 600 for a new base, 0 on resume.
    init_from: another studio-mini pipeline whose UNet and text encoder weights start this run
    wherever the shapes match (a warm start after the autoencoder changed: the UNet's
    latent-facing convolutions then start fresh, and its pooled-prompt pathway too if the source
    had none). The UNet and text encoder are built from this run's config (with resume=True too:
    the folder then gives its autoencoder and history) around the source's weights and vocabulary,
    so that every word keeps its embedding; UNet levels are matched from the coarsest
    (models.copy_matching_weights). With resume=True, no init_from, and overrides
    {"unet_pooled_text": True} on a base without that pathway, the UNet is rebuilt with it around
    the saved weights (recorded as warm_start.upgrade).
    decoder_seconds > 0 then fine-tunes the autoencoder's decoder alone (encoder frozen, so the
    latents and the UNet stay valid); unet_seconds = 0 skips the UNet stage.

    run (generators/run.py): progress counts whole seconds of the stages' budget (vae, then
    decoder, then unet seconds; info: stage, step, loss) every 100 steps; should_stop() ends the
    current stage and writes the base with its exact-resume state; log gets the data line.
    log_file: every stage's lines (JSON), appended.
    """
    import shutil

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    out_dir = Path(out_dir)
    run = as_run(run)
    should_stop = run.should_stop
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
        vae_seconds = vae_seconds or 0  # only when asked: the UNet depends on the autoencoder's latents
        has_pooled = unet.config.get("addition_embed_type") == "text"
        if has_pooled and not cfg.unet_pooled_text:
            raise UserError(f"{out_dir}'s UNet has the pooled-prompt pathway; dropping it (--no-pooled-text) would "
                            f"discard what it learnt: train a new base without it instead")
        if init_from is not None:
            pass  # the UNet and text encoder are rebuilt from cfg below, around the source's weights
        elif not has_pooled and cfg.unet_pooled_text and "unet_pooled_text" in (overrides or {}):
            # An architecture change on resume: a new UNet, warm-started from the saved one.
            upgraded = build_unet(cfg)
            copied, fresh = copy_matching_weights(unet, upgraded)
            unet = upgraded
            unet_upgrade = {"from": str(out_dir), "unet": {"copied": copied, "fresh": fresh},
                            "why": f"unet_pooled_text {has_pooled} -> {cfg.unet_pooled_text}"}
        else:
            cfg = replace(cfg, unet_pooled_text=has_pooled)  # what the saved UNet is
    else:
        vae_seconds = 600 if vae_seconds is None else vae_seconds
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
        # The source's vocabulary, so that every token keeps its embedding (the words a campaign
        # added sit at ids that a fresh tokenizer would order differently), and a UNet built from
        # this run's config (its architecture may differ from the one saved here).
        tokenizer = CLIPTokenizer.from_pretrained(Path(init_from) / "tokenizer")
        tokenizer.model_max_length = cfg.max_length
        unet, text_encoder = build_unet(cfg), build_text_encoder(cfg, tokenizer)
        for name, module, cls in (("unet", unet, UNet2DConditionModel), ("text_encoder", text_encoder, CLIPTextModel)):
            copied, fresh = copy_matching_weights(cls.from_pretrained(Path(init_from) / name), module)
            warm_start[name] = {"copied": copied, "fresh": fresh}
        # Caption words the mini world gained since the source was trained: one token each.
        warm_start["words_added"] = add_style_words(tokenizer, text_encoder, miniworld.caption_words())

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
            state = grow_vocabulary_state(state, unet, text_encoder)
        styles_added += words_added
    global_step = int(state["global_step"]) if state is not None else 0

    log_lines = []
    budget = max(1, math.ceil(vae_seconds + decoder_seconds + unet_seconds))
    stage_start = {"vae": 0, "decoder": vae_seconds, "unet": vae_seconds + decoder_seconds}

    def log(**info):
        log_lines.append(info)
        if log_file:
            with open(log_file, "a") as fh:
                fh.write(json.dumps(info) + "\n")
        if info["stage"] in stage_start:
            done = min(budget - 1, int(stage_start[info["stage"]] + info["seconds"]))  # budget itself: when written
            run.progress(done, budget, **{k: v for k, v in info.items() if k != "seconds"})
        else:
            run.log(json.dumps(info))

    t0 = time.time()
    images_np, captions = render_dataset(cfg.n_images, cfg.data_seed + len(history) * 7919, cfg.resolution, workers,
                                         cfg.species_captions, cfg.bird_share, tuple(cfg.caption_styles), cfg.style_share,
                                         cfg.family_share, cfg.product_captions, cfg.family_emphasis)
    images = to_tensor(images_np).to(dev)
    log(stage="data", step=0, images=len(captions), seconds=round(time.time() - t0, 1))

    vae_steps = decoder_steps = 0
    if vae_seconds > 0:
        vae_steps = train_vae(vae, images, cfg, vae_seconds, dev, precision, log, should_stop,
                              anchor=cfg.vae_anchor if resume else 0.0)
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

    def write_base(unet_steps: int, ema_unet, ema_text, final: bool, opt=None) -> dict:
        """Save the EMA weights as the pipeline in out_dir, and with `opt` the exact-resume state
        beside it (swapped in whole: a kill keeps the old one)."""
        import copy

        unet_out, text_out = copy.deepcopy(unet).to("cpu"), copy.deepcopy(text_encoder).to("cpu")
        ema_unet.copy_to(unet_out.parameters())
        ema_text.copy_to(text_out.parameters())
        tmp = save_pipeline(out_dir, copy.deepcopy(vae), text_out.eval(), tokenizer, unet_out.eval())
        options = {
            "command": command_line(),
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
        unet_steps, ema_unet, ema_text, opt = 0, ema_of(unet, 0.0), ema_of(text_encoder, 0.0), None
    options = write_base(unet_steps, ema_unet, ema_text, final=True, opt=opt)
    run.progress(budget, budget)
    return options
