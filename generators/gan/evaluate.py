"""`studio eval gan`: how well a GAN base draws the plain mini world (issue 3's gan-mini figures).

mini-FID (Fréchet distance of the evaluator's penultimate features, `evaluators.mini_fid`) of n
samples against n fresh plain renderings, beside two references measured the same way and at the
same n: a second set of n fresh renderings (real vs real, the floor at this n) and the same
architecture untrained (the ceiling). Plus the fraction of samples whose most likely kind gets
probability >= `threshold` from the kind evaluator (recognisable objects), and how many of the
kinds appear among those (mode coverage), beside the same fraction for the real renderings and
for the untrained generator (a classifier can be confident about blobs: that is its floor).
"""

from __future__ import annotations

import time

import torch
from PIL import Image

from generators import miniworld
from generators.errors import UserError
from generators.evaluators import Evaluator, frechet_distance
from generators.gan.sampling import generate, to_pil
from generators.gan.stylegan2 import Generator
from generators.run import Run, as_run

# Fresh renderings come from world seeds that base pretraining (world seed 0) never draws.
REAL_WORLD_SEEDS = (90_001, 90_002)


def render_real(n: int, world_seed: int, size: int, kinds=miniworld.KINDS) -> list[Image.Image]:
    return [miniworld.generate(world_seed, i, size=size, kinds=kinds, held_out=False).image for i in range(n)]


def evaluate_gan(G: Generator, evaluator: Evaluator, n: int = 1000, seed: int = 0, threshold: float = 0.8,
                 kinds=miniworld.KINDS, run: Run | None = None, truncation_psi: float = 1.0) -> dict:
    """Flat dict of the figures above; `kinds`: what the base was trained on (the real sets hold
    those only); `truncation_psi`: the samples' truncation (the untrained reference is never
    truncated: its average w means nothing). run.progress(done, 4) after each of the 4 stages."""
    run = as_run(run)
    if n < 2:
        raise UserError(f"n must be at least 2 (a Fréchet distance needs a covariance), got {n}")
    start = time.time()
    stages = 4
    samples = to_pil(generate(G, n, seed, truncation_psi))
    untrained = to_pil(generate(_fresh_like(G, seed), n, seed))
    run.progress(1, stages)
    real_a = render_real(n, REAL_WORLD_SEEDS[0], G.resolution, kinds)
    real_b = render_real(n, REAL_WORLD_SEEDS[1], G.resolution, kinds)
    run.progress(2, stages)
    f_samples, f_untrained = evaluator.features(samples), evaluator.features(untrained)
    f_a, f_b = evaluator.features(real_a), evaluator.features(real_b)
    run.progress(3, stages)
    recognised, seen = kinds_recognised(evaluator, samples, threshold)
    recognised_real, _ = kinds_recognised(evaluator, real_a, threshold)
    recognised_untrained, _ = kinds_recognised(evaluator, untrained, threshold)
    run.progress(4, stages)
    return {
        "mini_fid": round(frechet_distance(f_samples, f_a), 4),
        "mini_fid_real_vs_real": round(frechet_distance(f_b, f_a), 4),
        "mini_fid_untrained": round(frechet_distance(f_untrained, f_a), 4),
        "kind_recognised_fraction": recognised,
        "kind_recognised_fraction_real": recognised_real,
        # the classifier's confidence off the image manifold: what noise alone scores
        "kind_recognised_fraction_untrained": recognised_untrained,
        "kinds_recognised": seen,
        "kinds_total": len(kinds),
        "threshold": threshold,
        "truncation_psi": truncation_psi,
        "n": n,
        "seed": seed,
        "real_world_seeds": list(REAL_WORLD_SEEDS),
        "seconds": round(time.time() - start, 1),
    }


def kinds_recognised(evaluator: Evaluator, images, threshold: float) -> tuple[float, list[str]]:
    """The fraction of images whose most likely kind has probability >= threshold, and those kinds."""
    p = evaluator.probabilities(images)["kind"]
    confident = p.max(-1).values >= threshold
    names = evaluator.labels["kind"]
    return round(float(confident.float().mean()), 4), sorted({names[i] for i in p.argmax(-1)[confident].tolist()})


def _fresh_like(G: Generator, seed: int) -> Generator:
    """An untrained generator of G's architecture (initialised from `seed`), on G's device."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = Generator(G.config)
    return fresh.to(next(G.parameters()).device).eval()
