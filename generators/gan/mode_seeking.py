"""Cluster-wise mode seeking (LFS-GAN, docs/methods.md §2.2), with correct cluster membership.

Each generated sample p is assigned to its nearest training (real) image under a perceptual
distance; samples sharing a nearest real image form a cluster C_b. For every pair (p, q),
p < q, *inside* each cluster with at least two members (docs/methods.md §2.2):

    S = (1/K) Σ_b Σ_{p<q ∈ C_b} [ d(w_p, w_q) / d(z_p, z_q)
                                  + (1/L) Σ_l d(F^l_p, F^l_q) / d(w_p, w_q)
                                  + d(G_p, G_q) / d(w_p, w_q) ]
    L_ms = λ / (S + ε),   λ = 1, ε = 1e-5,   d = mean absolute difference,

K the number of clusters with >= 2 members, F^l the synthesis block outputs, G_p the image.
No cluster with two members: no loss (None).

The released code (see docs/methods.md §2.2) looped over `range(|C_b|)` and so compared the first
|C_b| samples of the batch, whatever cluster they were in; here `cluster_pairs` yields the
members' own indices, and tests check them on a crafted batch.

Distances for the assignment (no gradient): `PerceptualDistance` (the evaluators' LPIPS-like
distance, batched as a matrix with the reals' activations cached) or `PixelDistance` (mean
absolute pixel difference: cheap, for tests and when no evaluator is available).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from generators.config import SavedConfig
from generators.errors import UserError

DISTANCES = ("perceptual", "pixel")


@dataclass
class ModeSeekingConfig(SavedConfig):
    """Cluster-wise mode seeking of one task (saved in task.json).

    enabled: add L_ms to the generator loss.
    weight: λ. eps: ε of L_ms = λ / (S + ε).
    batch: fakes per step for the term (0: reuse the adversarial G batch, no extra forward;
        > 0: a separate batch of that many samples with constant noise, as the released code
        draws a separate batch).
    distance: "perceptual" (evaluators) or "pixel" for the nearest-real assignment.
    """

    enabled: bool = True
    weight: float = 1.0
    eps: float = 1e-5
    batch: int = 0
    distance: str = "perceptual"

    def __post_init__(self):
        if self.distance not in DISTANCES:
            raise UserError(f"mode-seeking distance must be one of {DISTANCES}, got {self.distance!r}")
        if self.weight < 0 or self.eps <= 0 or self.batch < 0 or self.batch == 1:
            raise UserError("mode seeking needs weight >= 0, eps > 0 and batch 0 or >= 2")


# --------------------------------------------------------------------------- clusters


def assign_clusters(distances: torch.Tensor) -> torch.Tensor:
    """[n_fake, n_real] distances -> [n_fake] index of each fake's nearest real image (its cluster)."""
    if distances.ndim != 2 or distances.shape[1] < 1:
        raise ValueError(f"distances must be [n_fake, n_real], got {tuple(distances.shape)}")
    return distances.argmin(dim=1)


def clusters(assignment: torch.Tensor, min_size: int = 1) -> dict[int, list[int]]:
    """{real index: [fake indices]} for the clusters with at least `min_size` members (ascending)."""
    out: dict[int, list[int]] = {}
    for p, c in enumerate(assignment.tolist()):
        out.setdefault(int(c), []).append(p)
    return {c: members for c, members in sorted(out.items()) if len(members) >= min_size}


def cluster_pairs(assignment: torch.Tensor) -> list[tuple[int, int, int]]:
    """(cluster, p, q) with p < q for every pair of fakes inside every cluster of >= 2 members.

    p and q are indices into the batch: the members of that cluster (not the first |C| samples).
    """
    pairs = []
    for c, members in clusters(assignment, 2).items():
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                pairs.append((c, members[a], members[b]))
    return pairs


def _d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference per pair: a, b [P, ...] -> [P]."""
    return (a - b).abs().flatten(1).mean(1)


def mode_seeking_loss(z: torch.Tensor, w: torch.Tensor, features: list[torch.Tensor], images: torch.Tensor,
                      assignment: torch.Tensor, weight: float = 1.0, eps: float = 1e-5):
    """L_ms = λ / (S + ε) over the pairs inside each cluster (module docstring); None without pairs.

    z [N, z_dim], w [N, w_dim] (or [N, num_ws, w_dim]), features: per-layer [N, ...] tensors,
    images [N, C, H, W], assignment [N] (from `assign_clusters`). Returns (loss or None, info)
    with info = {"S", "clusters" (K), "pairs"}.
    """
    pairs = cluster_pairs(assignment)
    k = len({c for c, _, _ in pairs})
    if not pairs:
        return None, {"S": 0.0, "clusters": 0, "pairs": 0}
    p = torch.tensor([a for _, a, _ in pairs], device=images.device)
    q = torch.tensor([b for _, _, b in pairs], device=images.device)
    dz = _d(z[p], z[q]).clamp_min(1e-12)
    dw = _d(w[p], w[q]).clamp_min(1e-12)
    term = _d(w[p], w[q]) / dz
    if features:
        term = term + sum(_d(f[p], f[q]) / dw for f in features) / len(features)
    term = term + _d(images[p], images[q]) / dw
    s = term.sum() / k
    loss = weight / (s + eps)
    return loss, {"S": float(s.detach()), "clusters": k, "pairs": len(pairs)}


# --------------------------------------------------------------------------- distances


class PixelDistance:
    """Mean absolute pixel difference between fakes and the reals (images in [-1, 1])."""

    def __init__(self, reals: torch.Tensor):
        self.reals = reals.detach().float()

    @torch.no_grad()
    def __call__(self, fakes: torch.Tensor) -> torch.Tensor:
        f = fakes.detach().float().clamp(-1, 1)
        if f.shape[-2:] != self.reals.shape[-2:]:
            f = F.interpolate(f, size=self.reals.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
        return torch.cdist(f.flatten(1), self.reals.to(f.device).flatten(1), p=1) / f[0].numel()


class PerceptualDistance:
    """The evaluators' perceptual distance (Evaluator.perceptual_distance) as a matrix.

    At the stem and every stage, activations are unit-normalised along channels; the distance
    is the squared difference summed over channels, averaged over space, then over stages.
    With unit vectors |a - b|² = |a|² + |b|² - 2 a·b, so a whole [n_a, n_b] matrix is a few
    matrix products; the reals' activations are computed once.
    """

    def __init__(self, evaluator, reals: torch.Tensor | None = None):
        self.evaluator = evaluator
        self.size = evaluator.config.image_size
        self._reals = None if reals is None else self.activations(reals)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().to(self.evaluator.device, torch.float32).clamp(-1, 1)
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return x

    @torch.no_grad()
    def activations(self, images: torch.Tensor, chunk: int = 128) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per stage: (unit-normalised activations flattened [N, C*H*W] / sqrt(HW), mean squared norm [N])."""
        per_chunk = []
        for i in range(0, images.shape[0], chunk):
            x = self._prepare(images[i:i + chunk])
            stages = []
            for act in self.evaluator.net.stage_outputs(x):
                act = act.float()
                act = act / (act.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                hw = act.shape[2] * act.shape[3]
                sq = act.pow(2).sum(1).mean((1, 2))
                stages.append((act.flatten(1) / hw ** 0.5, sq))
            per_chunk.append(stages)
        return [(torch.cat([c[s][0] for c in per_chunk]), torch.cat([c[s][1] for c in per_chunk]))
                for s in range(len(per_chunk[0]))]

    @staticmethod
    def _matrix(acts_a, acts_b) -> torch.Tensor:
        total = None
        for (fa, sa), (fb, sb) in zip(acts_a, acts_b):
            d = sa[:, None] + sb[None, :] - 2.0 * (fa @ fb.t())
            total = d if total is None else total + d
        return (total / len(acts_a)).clamp_min(0.0)

    @torch.no_grad()
    def matrix(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """[n_a, n_b] perceptual distances (CPU, float32)."""
        return self._matrix(self.activations(a), self.activations(b)).cpu()

    @torch.no_grad()
    def __call__(self, fakes: torch.Tensor) -> torch.Tensor:
        """[n_fake, n_real] distances to the reals given at construction."""
        if self._reals is None:
            raise ValueError("PerceptualDistance was built without reals")
        return self._matrix(self.activations(fakes), self._reals).to(fakes.device)


def make_distance(kind: str, reals: torch.Tensor, evaluator=None):
    """The assignment distance for `ModeSeekingConfig.distance` ("perceptual" needs an evaluator)."""
    if kind == "pixel":
        return PixelDistance(reals)
    if kind == "perceptual":
        if evaluator is None:
            raise UserError("mode seeking with the perceptual distance needs the evaluators (assets/evaluators); "
                            "train them with `studio pretrain evaluators` or use the pixel distance")
        return PerceptualDistance(evaluator, reals)
    raise UserError(f"unknown distance {kind!r}; choose from {DISTANCES}")
