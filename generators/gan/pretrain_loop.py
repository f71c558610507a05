"""The training loop of gan-mini pretraining (StyleGAN2, Karras et al., CVPR 2020; StyleGAN2-ADA's recipe).

One step renders one G batch and reuses it for the D step (detached) and the G step:
  * D: non-saturating logistic loss on the detached fakes and a batch of reals; lazy R1 on the
    reals (γ/2 · ||∇D(x)||², every `r1_interval` D steps, in fp32, scaled by the interval);
  * G: style mixing (two latents, a random crossover layer, with `style_mixing_prob`), the
    non-saturating loss through the updated D, optionally plus the projected feature
    discriminator's (`generators.gan.feature_d`); optional lazy path-length regularization
    (StyleGAN2 Eq. 4: E[(||J_wᵀ y||₂ − a)²], a the running mean of the lengths; every
    `pl_interval` G steps, on half a batch, in fp32, scaled by the interval);
  * G_ema: an exponential moving average of G with a half-life of `ema_kimg` thousand images
    (ramped up over the first images), the network that gets saved.
Optional bf16 or fp16 autocast on CUDA (fp16 with GradScalers). Per step there is no host-device
synchronization: losses are summed on the device and read once a `log_every` seconds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from generators.gan.image_pool import ImagePool
from generators.gan.pretrain_files import Networks, TrainingState, save_checkpoint, write_samples
from generators.gan.sampling import preview_images
from generators.gan.stylegan2 import GANConfig
from generators.precision import autocast as precision_autocast, grad_scaler
from generators.run import Run


@dataclass
class LoopSettings:
    """The options of `pretrain_gan` that the loop reads (see its docstring)."""

    precision: str
    batch: int
    r1_gamma: float
    r1_interval: int
    style_mixing_prob: float
    ema_kimg: float
    ema_rampup: float | None
    checkpoint_every: float
    seconds: float
    log_every: float
    feature_d_weight: float = 1.0
    pl_weight: float = 0.0
    pl_interval: int = 4


def train_loop(nets: Networks, pool: ImagePool, cfg: GANConfig, state: TrainingState, out: Path, dev: torch.device,
               s: LoopSettings, t_start: float, options: dict, run: Run) -> dict:
    """Train until `s.seconds` after t_start (at least one step) or run.should_stop(); checkpoint every
    `s.checkpoint_every` seconds. run.progress gets whole seconds of the budget about once a `log_every`."""
    G, D, G_ema, opt_G, opt_D = nets.G, nets.D, nets.G_ema, nets.opt_G, nets.opt_D
    D_feat, opt_P = nets.D_feat, nets.opt_P
    batch, num_ws = s.batch, cfg.num_ws
    scaler_G = grad_scaler(dev, s.precision)  # pretrain_gan allows bf16/fp16 on CUDA only
    scaler_D = grad_scaler(dev, s.precision)

    def autocast():
        return precision_autocast(dev, s.precision)

    g_params, ema_params = list(G.parameters()), list(G_ema.parameters())
    ws_index = torch.arange(num_ws, device=dev)[None, :, None]
    zero = torch.zeros([], device=dev)
    sums = {"loss_G": zero.clone(), "loss_D": zero.clone(), "r1": zero.clone()}
    if s.pl_weight:
        sums["pl"] = zero.clone()
        pl_mean = torch.tensor(state.pl_mean, device=dev)
    if D_feat is not None:
        from generators.gan.feature_d import logistic_loss

        sums.update(loss_P=zero.clone(), loss_G_P=zero.clone())
    counts = dict.fromkeys(sums, 0)
    last_losses: dict = {}
    deadline = t_start + s.seconds
    total = int(math.ceil(s.seconds))  # the progress unit: whole seconds of the budget
    t_loop = time.monotonic()
    t_last_ckpt = t_loop
    t_last_log = t_loop
    steps = 0
    stopped_by = "time"
    r1_tick = state.step

    def report(now, done=None):
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
        info = dict(steps=state.step, kimg=round(state.images_seen / 1000, 1),
                    **{k: float(v) for k, v in last_losses.items()}, s_per_step=(now - t_loop) / max(steps, 1))
        run.progress(min(int(now - t_start), total) if done is None else done, total, **info)

    while True:
        now = time.monotonic()
        if steps > 0:
            if now >= deadline:
                break
            if run.should_stop():
                stopped_by = "should_stop"
                break
        pool.refresh()
        real = pool.batch(batch)

        # ---- generate once; D step on the detached batch, G step through the updated D
        z = torch.randn(batch, cfg.z_dim, device=dev)
        ws = G.mapping(z, update_emas=True)
        if s.style_mixing_prob > 0:
            cutoff = torch.randint(1, num_ws, [], device=dev) if num_ws > 1 else torch.ones([], dtype=torch.long,
                                                                                                device=dev)
            cutoff = torch.where(torch.rand([], device=dev) < s.style_mixing_prob, cutoff,
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
        if s.r1_gamma > 0 and r1_tick % s.r1_interval == 0:  # lazy R1, fully in fp32
            real_r1 = real.detach().requires_grad_(True)
            logits = D(real_r1)
            (grad,) = torch.autograd.grad(logits.sum(), real_r1, create_graph=True)
            penalty = grad.float().square().sum(dim=(1, 2, 3)).mean()
            opt_D.zero_grad(set_to_none=True)
            (penalty * (s.r1_gamma / 2 * s.r1_interval) + logits.mean() * 0).backward()
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
            loss_G = loss_G + s.feature_d_weight * loss_G_P
            sums["loss_G_P"] += loss_G_P.detach()
            counts["loss_G_P"] += 1
        opt_G.zero_grad(set_to_none=True)
        scaler_G.scale(loss_G).backward()
        scaler_G.step(opt_G)
        scaler_G.update()

        if s.pl_weight and (state.step + 1) % s.pl_interval == 0:  # lazy path-length penalty, fully in fp32
            ws_pl = G.mapping(torch.randn(max(batch // 2, 1), cfg.z_dim, device=dev))
            img = G.synthesis(ws_pl, noise_mode="random", fused=False)
            y = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
            (grad,) = torch.autograd.grad((img * y).sum(), ws_pl, create_graph=True)
            lengths = grad.square().sum(2).mean(1).sqrt()
            pl_mean = pl_mean.lerp(lengths.mean().detach(), 0.01)
            penalty = (lengths - pl_mean).square().mean()
            opt_G.zero_grad(set_to_none=True)
            (penalty * (s.pl_weight * s.pl_interval)).backward()
            opt_G.step()
            sums["pl"] += penalty.detach()
            counts["pl"] += 1

        # ---- G EMA: StyleGAN2's, a half-life of `ema_kimg` thousand images ramped up to
        # images_seen * ema_rampup, so beta depends on the batch and on images_seen (saved in the
        # checkpoint: a resume continues the same curve). Not diffusers' EMAModel (sd_mini's): its
        # decay is a function of its own step count only, capped by (1 + s) / (10 + s), it keeps
        # shadow copies instead of a module, and it knows no batch size; the same betas would need
        # its decay reset every step around that cap. G_ema is a whole module (w_avg copied, not
        # averaged) that previews sample and the checkpoint stores as it is.
        state.step += 1
        state.images_seen += batch
        steps += 1
        ema_nimg = s.ema_kimg * 1000
        if s.ema_rampup:
            ema_nimg = min(ema_nimg, state.images_seen * s.ema_rampup)
        beta = 0.5 ** (batch / max(ema_nimg, 1e-8))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, g_params, 1.0 - beta)
            G_ema.mapping.w_avg.copy_(G.mapping.w_avg)
        if run.wants_preview(state.step):  # G_ema, from seeds of its own: the training RNG is untouched
            run.preview(state.step, *preview_images(G_ema, f"step {state.step}"))

        now = time.monotonic()
        if now - t_last_log >= s.log_every:
            report(now)
            t_last_log = now
        if s.checkpoint_every and now - t_last_ckpt >= s.checkpoint_every and now < deadline:
            state.train_seconds += now - t_last_ckpt
            t_last_ckpt = now
            state.next_index = pool.next_index if pool.num_workers > 0 else state.next_index
            if s.pl_weight:
                state.pl_mean = float(pl_mean)
            save_checkpoint(out, nets, state, cfg, options)
            write_samples(G_ema, out, dev)

    now = time.monotonic()
    report(now, done=total if stopped_by == "time" else None)  # a budget spent is the whole of it
    state.train_seconds += now - t_last_ckpt
    if s.pl_weight:
        state.pl_mean = float(pl_mean)
    D.requires_grad_(True)
    return dict(steps=steps, train_seconds=now - t_loop, s_per_step=round((now - t_loop) / max(steps, 1), 5),
                stopped_by=stopped_by, losses={k: round(v, 5) for k, v in last_losses.items()},
                images_rendered=pool.images_rendered)
