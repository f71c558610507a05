"""Reference styles drawn from the image's edges: pencil sketch, neon glow, crosshatch, blueprint.

Each renderer maps an RGB image and a seeded ``np.random.Generator`` to a restyled RGB
image of the same size; styles/reference.py registers them under their names.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from styles import reference_ops as op


def pencil_sketch(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Graphite drawing: soft grey contour lines from luminance/colour edges plus
    light diagonal stroke shading that follows darkness, on grainy off-white
    paper.  Greyscale only."""
    u = op.unit(img)
    a = op.to_array(img)
    h, w = a.shape[:2]
    g = op.luma(a)
    edges = np.clip(1.6 * op.edge_map(img, u, pre_blur=0.6) - 0.06, 0, 1)
    edges = np.clip(edges + 0.5 * op.blur(edges, 0.8 * u), 0, 1)  # soft, smudged
    # directional stroke texture: noise smeared along a 45 degree diagonal,
    # built on the 64 px-equivalent grid and upsampled
    bh, bw = op.base_shape(h, w, u)
    n = rng.random((bh, bw)).astype(np.float32)
    strokes = np.zeros_like(n)
    for k in range(6):
        strokes += np.roll(n, (k, k), axis=(0, 1))
    strokes = np.clip((strokes / 6 - 0.5) * 6.0 + 0.5, 0, 1)  # streaky
    strokes = op.upsample(strokes, h, w)
    dark = np.clip((0.92 - g) / 0.92, 0, 1)
    shade = 0.55 * dark * strokes
    graphite = np.clip(np.maximum(edges, shade), 0, 0.9)
    paper = np.array([0.96, 0.945, 0.91], np.float32)
    grain = (op.noise(rng, h, w, u) - 0.5) * 0.05
    lead = np.array([0.22, 0.22, 0.25], np.float32)
    out = paper + grain[..., None]
    out = out * (1 - graphite[..., None]) + lead * graphite[..., None]
    return op.to_image(out)


def neon_glow(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Neon signs at night: object/colour borders become thin fully saturated
    tubes with white-hot cores and a wide coloured glow, on a near-black
    background with only a faint hint of the original fill."""
    u = op.unit(img)
    a = op.to_array(img)
    e = op.edge_map(img, u)
    e = np.clip((e - 0.08) * 3.0, 0, 1)
    hsv = op.hsv(img)
    # each tube takes the most vivid colour in its 3x3 neighbourhood, so a
    # border between a vivid object and a dull background glows in the
    # object's colour instead of a washed-out mix
    key = np.pad(hsv[..., 1] * hsv[..., 2], 1, mode="edge")
    hue = np.pad(hsv[..., 0], 1, mode="edge")
    hh, ww = hsv.shape[:2]
    best_k = np.full((hh, ww), -1.0, np.float32)
    best_h = np.zeros((hh, ww), np.float32)
    for dy in range(3):
        for dx in range(3):
            k = key[dy:dy + hh, dx:dx + ww]
            better = k > best_k
            best_k = np.where(better, k, best_k)
            best_h = np.where(better, hue[dy:dy + hh, dx:dx + ww], best_h)
    neon = op.from_hsv(np.stack([best_h, np.ones_like(best_h), np.ones_like(best_h)], -1))
    # neighbourhoods without usable colour -> electric cyan tubes
    neon = np.where((best_k < 0.1)[..., None], np.array([0.2, 1.0, 1.0], np.float32), neon)
    tube = neon * e[..., None]
    glow = op.blur(tube, 2.0 * u) * 1.3 + op.blur(tube, 5.0 * u) * 1.0
    core = np.clip(e - 0.85, 0, 1)[..., None] * 2.0
    bg = np.array([0.03, 0.02, 0.07], np.float32) + 0.08 * a
    out = bg + glow + 1.2 * tube + core
    out = 1.0 - np.exp(-1.5 * out)  # soft tone map keeps the tube hue saturated
    return op.to_image(out)


def crosshatch(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Pen-and-ink: pure black hatching on white paper, up to four line layers
    (/, \\, -, |) added as the image gets darker, plus inked contours."""
    u = op.unit(img)
    a = op.to_array(img)
    h, w = a.shape[:2]
    g = op.luma(op.blur(a, 0.5 * u))
    dark = 1.0 - g
    y, x = op.grid(h, w)
    xi, yi = np.floor(x).astype(np.int32), np.floor(y).astype(np.int32)
    p = max(4, int(round(5 * u)))
    lw = max(1, int(round(1.1 * u)))
    ph = rng.integers(0, p, size=4)
    l1 = ((xi + yi + ph[0]) % p) < lw
    l2 = ((xi - yi + ph[1]) % p) < lw
    l3 = ((yi + ph[2]) % p) < lw
    l4 = ((xi + ph[3]) % p) < lw
    ink = ((dark > 0.28) & l1) | ((dark > 0.5) & l2) | ((dark > 0.68) & l3) \
        | ((dark > 0.84) & l4)
    ink |= op.edge_map(img, u) > 0.3
    paper = np.array([1.0, 1.0, 0.985], np.float32)
    out = np.where(ink[..., None], np.float32(0.03), paper)
    return op.to_image(out)


def blueprint(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Technical blueprint: crisp white contour lines traced from the image
    edges, over a deep cyanotype blue with a faint square drafting grid and a
    very faint tint of the original luminance."""
    u = op.unit(img)
    a = op.to_array(img)
    h, w = a.shape[:2]
    e = op.edge_map(img, u, pre_blur=0.4)
    line = np.clip((e - 0.12) * 4.0, 0, 1)
    y, x = op.grid(h, w)
    step = max(4.0, 8.0 * u)
    gw = max(1.0, u)
    grid = ((np.mod(x, step) < gw) | (np.mod(y, step) < gw)).astype(np.float32)
    bg = np.array([0.06, 0.22, 0.55], np.float32)
    g = op.luma(a)
    out = bg * (0.85 + 0.3 * g[..., None]) + 0.09 * grid[..., None]
    white = np.array([0.93, 0.97, 1.0], np.float32)
    out = out + (white - out) * np.clip(line, 0, 1)[..., None]
    return op.to_image(out)
