"""Reference styles built from cells, dots or tiles: pixel art, halftone, mosaic, pop art.

Each renderer maps an RGB image and a seeded ``np.random.Generator`` to a restyled RGB
image of the same size; styles/reference.py registers them under their names.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from styles import reference_ops as op


def pixel_art(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Retro sprite look: 16x16 grid of big square pixels, a 4-level-per-channel
    (64 colour) palette with a saturation/contrast boost, dark outline blocks
    along object borders, upsampled with nearest neighbour."""
    w, h = img.size
    b = max(1, round(4 * op.unit(img)))
    sw, sh = max(1, round(w / b)), max(1, round(h / b))
    small = op.to_array(img.resize((sw, sh), Image.BOX))
    # saturation + contrast boost around the grey axis
    g = op.luma(small)[..., None]
    small = g + 1.35 * (small - g)
    small = 0.5 + 1.15 * (small - 0.5)
    q = np.round(np.clip(small, 0, 1) * 3.0) / 3.0
    # one-block dark outline on the darker side of strong borders
    lum = op.luma(q)
    edge = op.color_edges(q) > 0.45
    nb_max = np.asarray(
        Image.fromarray((lum * 255).astype(np.uint8), "L").filter(ImageFilter.MaxFilter(3)),
        dtype=np.float32) / 255.0
    darker = lum < nb_max - 0.08
    q = np.where((edge & darker)[..., None], q * 0.45, q)
    return op.to_image(q).resize((w, h), Image.NEAREST)


def halftone(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """CMYK print halftone: four rotated screens (C 15, M 75, Y 0, K 45 deg) of
    round dots whose area follows ink coverage, on white paper."""
    u = op.unit(img)
    a = op.blur(op.to_array(img), 0.8 * u)
    h, w = a.shape[:2]
    y, x = op.grid(h, w)
    cell = max(3.0, 4.0 * u)
    c, m, yy = 1 - a[..., 0], 1 - a[..., 1], 1 - a[..., 2]
    k = np.minimum(np.minimum(c, m), yy) * 0.9
    inks = [(c - k) / (1 - k + 1e-6), (m - k) / (1 - k + 1e-6),
            (yy - k) / (1 - k + 1e-6), k]
    angles = [15.0, 75.0, 0.0, 45.0]
    colors = [np.array([0.0, 0.68, 0.94], np.float32),   # cyan
              np.array([0.93, 0.0, 0.55], np.float32),   # magenta
              np.array([1.0, 0.95, 0.0], np.float32),    # yellow
              np.array([0.08, 0.08, 0.1], np.float32)]   # black
    out = np.ones((h, w, 3), np.float32) * np.array([1.0, 0.99, 0.96], np.float32)
    for ink, ang, col in zip(inks, angles, colors):
        t = np.deg2rad(ang)
        ct, st = np.float32(np.cos(t)), np.float32(np.sin(t))
        uu = x * ct + y * st
        vv = -x * st + y * ct
        cu = (np.floor(uu / cell) + 0.5) * cell
        cv = (np.floor(vv / cell) + 0.5) * cell
        sx = np.clip((cu * ct - cv * st).astype(np.int32), 0, w - 1)
        sy = np.clip((cu * st + cv * ct).astype(np.int32), 0, h - 1)
        cov = np.clip(ink[sy, sx], 0, 1)
        r = cell * np.sqrt(cov / np.pi) * 1.15
        d = np.sqrt((uu - cu) ** 2 + (vv - cv) ** 2)
        dot = np.clip(r - d + 0.5, 0, 1)[..., None]  # 1 px anti-aliasing
        out = out * (1 - dot) + out * col * dot  # multiplicative ink
    return op.to_image(out)


def mosaic(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Ceramic mosaic: jittered (Voronoi) tiles, each filled with the mean
    colour under its seed plus a small per-tile shade variation and bevel, separated
    by dark grout lines."""
    u = op.unit(img)
    a = op.to_array(img)
    h, w = a.shape[:2]
    t = max(3.0, 5.0 * u)
    gh, gw = int(np.ceil(h / t)) + 1, int(np.ceil(w / t)) + 1
    jit = rng.uniform(0.15, 0.85, size=(gh, gw, 2)).astype(np.float32)
    sy = (np.arange(gh, dtype=np.float32)[:, None] - 0.5 + jit[..., 0]) * t
    sx = (np.arange(gw, dtype=np.float32)[None, :] - 0.5 + jit[..., 1]) * t
    y, x = op.grid(h, w)
    ci = np.clip(np.floor(y / t + 0.5).astype(np.int32), 0, gh - 1)
    cj = np.clip(np.floor(x / t + 0.5).astype(np.int32), 0, gw - 1)
    best = np.full((h, w), np.inf, np.float32)
    second = np.full((h, w), np.inf, np.float32)
    label = np.zeros((h, w), np.int32)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            ii = np.clip(ci + di, 0, gh - 1)
            jj = np.clip(cj + dj, 0, gw - 1)
            d = np.sqrt((y - sy[ii, jj]) ** 2 + (x - sx[ii, jj]) ** 2)
            lab = ii * gw + jj
            closer = d < best
            same = lab == label
            second = np.where(closer, np.where(same, second, best),
                              np.where(same, second, np.minimum(second, d)))
            label = np.where(closer, lab, label)
            best = np.where(closer, d, best)
    n = gh * gw
    # each tile takes the (lightly smoothed) colour under its seed point
    sm = op.blur(a, 0.6 * u)
    syi = np.clip(sy.astype(np.int32), 0, h - 1).ravel()
    sxi = np.clip(sx.astype(np.int32), 0, w - 1).ravel()
    mean = sm[syi, sxi]
    shade = rng.uniform(0.88, 1.08, size=n).astype(np.float32)
    tile = mean[label] * shade[label][..., None]
    bevel = 1.06 - 0.16 * np.clip(best / (0.7 * t), 0, 1)
    tile = tile * bevel[..., None]
    gw_px = max(0.45, 0.45 * u)
    grout = np.clip((second - best) / (2 * gw_px) - 0.5, 0, 1)[..., None]
    gcol = np.array([0.35, 0.33, 0.3], np.float32)
    out = gcol + (tile - gcol) * grout
    return op.to_image(out)


def pop_art(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Comic pop art: hues snapped to six bold primaries at full saturation,
    4-level posterised value (black / shade / colour / pale), greys become
    black or white, and regular Ben-Day dots printed over every colour area."""
    u = op.unit(img)
    hsv = op.hsv(img)
    h, w = hsv.shape[:2]
    hue = np.round(hsv[..., 0] * 12.0) % 12.0 / 12.0
    s, v = hsv[..., 1], hsv[..., 2]
    colorful = s > 0.12
    vq = np.where(v < 0.25, 0.0, np.where(v < 0.55, 0.6, 1.0))
    sq = np.where(colorful, np.where((v > 0.88) & (s < 0.35), 0.55, 1.0), 0.0)
    out = op.from_hsv(np.stack([hue, sq, vq], -1))
    # Ben-Day dots on a 45 degree lattice, darker shade of the same colour
    y, x = op.grid(h, w)
    p = max(3.0, 3.5 * u)
    uu = (x + y) / np.sqrt(2)
    vv = (x - y) / np.sqrt(2)
    du = uu - (np.floor(uu / p) + 0.5) * p
    dv = vv - (np.floor(vv / p) + 0.5) * p
    d = np.sqrt(du * du + dv * dv)
    dot = np.clip(0.33 * p - d + 0.5, 0, 1) * (colorful & (vq > 0))
    pale = (sq < 0.8)[..., None]
    full = op.from_hsv(np.stack([hue, np.ones_like(sq), np.maximum(vq, 0.6)], -1))
    dotted = np.where(pale, full * 0.9, out * 0.5)
    out = out * (1 - dot[..., None]) + dotted * dot[..., None]
    return op.to_image(out)
