"""The loss terms of a museum task, each a pure function (tensors in, scalar out).

Notation: z_t noisy latents, eps the noise, eps_hat the UNet's prediction, x0_hat the
clean latent implied by eps_hat (DDPM: x0 = (z_t - sqrt(1 - a_t) eps) / sqrt(a_t)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def latent_statistics(z: torch.Tensor) -> torch.Tensor:
    """Content-agnostic statistics of latents B×C×H×W: per-channel mean, std and the
    channel Gram matrix (upper triangle), i.e. what stays when the layout is shuffled."""
    b, c = z.shape[:2]
    flat = z.flatten(2)
    mean, std = flat.mean(-1), flat.std(-1)
    centred = flat - mean[..., None]
    gram = centred @ centred.transpose(1, 2) / flat.shape[-1]
    iu = torch.triu_indices(c, c, device=z.device)
    return torch.cat([mean, std, gram[:, iu[0], iu[1]]], dim=1)


def style_distillation_loss(x0_hat: torch.Tensor, set_statistics: torch.Tensor, tau: float, weight: torch.Tensor) -> torch.Tensor:
    """MuseumMaker's style distillation loss (docs/methods.md §1.3):
    L_SDL = (1/B) Σ_i KL( softmax(F(x_i)/τ) || softmax(z̄/τ) ), z̄ = mean_i F(x_i) over the style set.

    The public text leaves F, τ and the timestep handling open. We take F = the latent
    statistics above (what a style shares across its images, not their layout), apply it to
    the model's own x0 prediction so the term has gradients, and weight each sample by
    `weight` (alpha_t, so that nearly pure-noise steps, whose x0 is a guess, count little).
    """
    log_p = F.log_softmax(latent_statistics(x0_hat.float()) / tau, dim=1)
    log_q = F.log_softmax(set_statistics.float()[None] / tau, dim=1).expand_as(log_p)
    kl = (log_p.exp() * (log_p - log_q)).sum(1)
    return (kl * weight).mean()


Factors = tuple[torch.Tensor, torch.Tensor] | None  # ΔW = U @ V (U: out×k, V: k×in); None: ΔW = 0


def lora_factors(lora_a: torch.Tensor, lora_b: torch.Tensor, scale: float) -> Factors:
    """ΔW = scale · B A for one peft LoRA layer (A: r×in, B: out×r), kept as its two factors.
    A conv LoRA (A: r×in×k×k, B: out×r×1×1) is the same product on the flattened kernel."""
    return scale * lora_b.flatten(1), lora_a.flatten(1)


def factor_difference(now: Factors, before: Factors) -> Factors:
    """now − before as factors: [U_now, −U_before] @ [V_now; V_before] (rank adds up, never out×in)."""
    if before is None:
        return now
    if now is None:
        return -before[0], before[1]
    return torch.cat([now[0], -before[0]], 1), torch.cat([now[1], before[1]], 0)


def factor_inner(x: Factors, y: Factors) -> torch.Tensor:
    """Frobenius ⟨U1 V1, U2 V2⟩ = Σ (U1ᵀU2) ⊙ (V1 V2ᵀ): k×k products instead of out×in matrices."""
    return ((x[0].T @ y[0]) * (x[1] @ y[1].T)).sum()


def weight_direction_loss(current: list[Factors], before: list[Factors], earlier_updates: list[list[Factors]],
                          form: str = "cosine") -> torch.Tensor:
    """Weight aspect of the dual regularization (docs/methods.md §1.4; cf. CIDM's R1, C-LoRA): how
    much this task's update ΔW_t = W_now − W_before runs along each given earlier update U, per
    layer, averaged; orthogonal updates cost nothing.

    form "cosine": cos²(ΔW_t, U), scale-free, so its gradient grows as 1/‖ΔW_t‖ while the update
    is small: at the start of a task it outweighs the diffusion loss, and the shared LoRA moves
    little after its first task (it forgets little and learns later styles poorly).
    form "projection": (⟨ΔW_t, U⟩ / ‖U‖²)² = cos² · (‖ΔW_t‖ / ‖U‖)², the update's run along U
    relative to U's size (undoing half of U costs 0.25), with a gradient that vanishes with the
    update: later styles are learnt about as well as by a fresh LoRA, and forgotten more.
    (docs/lab/2026-12-notebook.md, chunk 6, has both side by side.)
    form "gated": cos² · min(1, ‖ΔW_t‖² / ‖U‖²), the gate held constant in the gradient: the
    projection's pull while the update is smaller than U, the cosine's once it has grown to U's
    size, so a new task starts free and is turned away from U only once it is as large.

    The museum passes one earlier update: the shared LoRA as the last task left it, which is the
    sum of every earlier task's update (C-LoRA's Σ_{t'<t} A_t'B_t'), so that it stores one LoRA
    however many styles it holds. Every update is a low-rank product, so the inner products are
    computed from the factors.
    """
    if not earlier_updates:
        return current[0][0].new_zeros(())
    total, count = current[0][0].new_zeros(()), 0
    for layer, (now, prev) in enumerate(zip(current, before)):
        update = factor_difference(now, prev)
        # cosine and gated: the +1e-16 keeps the gradient finite at ΔW_t = 0
        update_sq = factor_inner(update, update).clamp_min(0)
        scale = (update_sq + 1e-16).sqrt() if form != "projection" else None
        for past in earlier_updates:
            old = past[layer]
            count += 1
            if old is None:
                continue
            old_sq = factor_inner(old, old).clamp_min(1e-16)
            denominator = old_sq if form == "projection" else scale * old_sq.sqrt()
            term = (factor_inner(update, old) / denominator) ** 2
            if form == "gated":
                term = term * (update_sq / old_sq).clamp(max=1.0).detach()
            total = total + term
    return total / count


def token_overlap_loss(vectors: list[torch.Tensor], means: list[torch.Tensor], earlier_dirs: list) -> torch.Tensor:
    """The new token's direction away from the vocabulary's mean against the earlier tokens' (ours,
    after CIDM's orthogonal subspaces, on the tokens): mean cos² over earlier tokens and text
    encoders, every vector of a multi-vector token against every earlier one. Trained from one
    starting point, a museum's tokens left the mean along one shared direction (pairwise cosines
    0.5-0.85), so the shared LoRA could not tell them apart."""
    total, count = vectors[0].new_zeros(()), 0
    for v, mu, dirs in zip(vectors, means, earlier_dirs):
        if dirs is None:
            continue
        d = F.normalize(v.float().reshape(-1, mu.shape[-1]) - mu, dim=-1)
        total = total + ((d @ dirs.T) ** 2).sum()
        count += d.shape[0] * dirs.shape[0]
    return total / max(count, 1)


def feature_distillation_loss(student: torch.Tensor, teacher: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Feature aspect (docs/methods.md §1.5, LwF-style): the UNet's predictions for earlier styles'
    prompts stay where the frozen pre-task model put them. Teacher outputs are computed once
    per task on a cached replay pool, so this costs one student pass on a small batch. `weight`:
    one factor per sample (None: all 1)."""
    if weight is None:
        return F.mse_loss(student.float(), teacher.float())
    return ((student.float() - teacher.float()).pow(2).flatten(1).mean(1) * weight).mean()
