"""`studio eval gan`: how well a GAN base draws the plain mini world (issue 3's gan-mini figures).

mini-FID (Fréchet distance of the evaluator's penultimate features, `evaluators.mini_fid`) of n
samples against n fresh plain renderings, beside two references measured the same way and at the
same n: a second set of n fresh renderings (real vs real, the floor at this n) and the same
architecture untrained (the ceiling). Plus the fraction of samples whose most likely kind gets
probability >= `threshold` from the kind evaluator (recognisable objects), and how many of the
kinds appear among those (mode coverage).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from PIL import Image

from generators import miniworld
from generators.evaluators import Evaluator, frechet_distance
from generators.gan.stylegan2 import Generator, seeded_z, to_uint8

# Fresh renderings come from world seeds that base pretraining (world seed 0) never draws.
REAL_WORLD_SEEDS = (90_001, 90_002)


@torch.no_grad()
def sample_images(G: Generator, n: int, seed: int, batch: int = 64, truncation: float = 1.0) -> list[Image.Image]:
    """n PIL samples of G (eval mode, constant noise) from `seeded_z(n, ·, seed)`."""
    G = G.eval()
    device = next(G.parameters()).device
    z = seeded_z(n, G.z_dim, seed, device)
    out = []
    for i in range(0, n, batch):
        out += [Image.fromarray(a) for a in to_uint8(G(z[i:i + batch], truncation_psi=truncation))]
    return out


def render_real(n: int, world_seed: int, size: int) -> list[Image.Image]:
    return [miniworld.generate(world_seed, i, size=size, held_out=False).image for i in range(n)]


def evaluate_gan(G: Generator, evaluator: Evaluator, n: int = 1000, seed: int = 0, threshold: float = 0.8,
                 progress=None) -> dict:
    """Flat dict of the figures above; `progress(done, total)` after each stage."""
    if n < 2:
        raise ValueError(f"n must be at least 2 (a Fréchet distance needs a covariance), got {n}")
    start = time.time()
    size = G.resolution
    stages = 5
    tick = (lambda k: progress(k, stages)) if progress else (lambda k: None)
    samples = sample_images(G, n, seed)
    tick(1)
    untrained = _fresh_like(G, seed)
    untrained_samples = sample_images(untrained, n, seed)
    tick(2)
    real_a = render_real(n, REAL_WORLD_SEEDS[0], size)
    real_b = render_real(n, REAL_WORLD_SEEDS[1], size)
    tick(3)
    f_samples, f_untrained = evaluator.features(samples), evaluator.features(untrained_samples)
    f_a, f_b = evaluator.features(real_a), evaluator.features(real_b)
    tick(4)
    kind = evaluator.probabilities(samples)["kind"]
    confident = kind.max(-1).values >= threshold
    kinds_seen = sorted({evaluator.labels["kind"][i] for i in kind.argmax(-1)[confident].tolist()})
    real_kind = evaluator.probabilities(real_a)["kind"]
    tick(5)
    return {
        "mini_fid": round(frechet_distance(f_samples, f_a), 4),
        "mini_fid_real_vs_real": round(frechet_distance(f_b, f_a), 4),
        "mini_fid_untrained": round(frechet_distance(f_untrained, f_a), 4),
        "kind_recognised_fraction": round(float(confident.float().mean()), 4),
        "kind_recognised_fraction_real": round(float((real_kind.max(-1).values >= threshold).float().mean()), 4),
        "kinds_recognised": kinds_seen,
        "kinds_total": len(evaluator.labels["kind"]),
        "threshold": threshold,
        "n": n,
        "seed": seed,
        "real_world_seeds": list(REAL_WORLD_SEEDS),
        "seconds": round(time.time() - start, 1),
    }


def _fresh_like(G: Generator, seed: int) -> Generator:
    """An untrained generator of G's architecture (initialised from `seed`), on G's device."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = Generator(G.config)
    return fresh.to(next(G.parameters()).device).eval()


def kind_histogram(evaluator: Evaluator, images, threshold: float = 0.8) -> dict[str, int]:
    """How many images each kind gets among the confidently recognised ones."""
    p = evaluator.probabilities(images)["kind"]
    keep = p.max(-1).values >= threshold
    names = evaluator.labels["kind"]
    counts = np.bincount(p.argmax(-1)[keep].numpy(), minlength=len(names))
    return {names[i]: int(c) for i, c in enumerate(counts)}
