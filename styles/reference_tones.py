"""Reference styles that remap colour and tone: watercolour, flat outline, sepia, thermal.

Each renderer maps an RGB image and a seeded ``np.random.Generator`` to a restyled RGB
image of the same size; styles/reference.py registers them under their names.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from styles import reference_ops as op


def watercolor(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Wet watercolour wash: colours lightened toward the paper, wobbly bled
    borders (smooth random displacement + blur), pigment pooled as darker
    rims at colour borders, blotchy granulation and paper grain."""
    u = op.unit(img)
    a = op.to_array(img)
    h, w = a.shape[:2]
    y, x = op.grid(h, w)
    # smooth random displacement -> wobbly, bleeding borders
    amp = 2.0 * u
    dy = (op.noise(rng, h, w, u, smooth=2.5) - 0.5) * 8 * amp
    dx = (op.noise(rng, h, w, u, smooth=2.5) - 0.5) * 8 * amp
    yi = np.clip((y + dy).astype(np.int32), 0, h - 1)
    xi = np.clip((x + dx).astype(np.int32), 0, w - 1)
    a = a[yi, xi]
    soft = op.blur(a, 1.2 * u)
    wide = op.blur(a, 3.0 * u)
    col = 0.75 * soft + 0.25 * wide  # colour bleeding into neighbours
    # pigment pooling: darker rim where the wash changes
    rim = np.clip(np.abs(soft - wide).sum(-1) * 2.2, 0, 1)
    # transparent wash: lift toward paper, keep hue
    paper = np.array([0.99, 0.97, 0.93], np.float32)
    g = op.luma(col)[..., None]
    col = g + 1.15 * (col - g)
    col = 0.62 * col + 0.38 * paper
    col = col * (1 - 0.45 * rim[..., None])
    # blotchy granulation + fine paper grain
    blot = op.noise(rng, h, w, u, smooth=3.0) - 0.5
    grain = op.noise(rng, h, w, u) - 0.5
    col = col * (1 + 1.2 * blot[..., None] + 0.06 * grain[..., None])
    return op.to_image(col)


def flat_outline(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Cartoon / cel look: slightly saturated colours posterised to a small
    adaptive palette of flat fills, with thick black outlines around every
    colour region."""
    u = op.unit(img)
    a = op.to_array(img.filter(ImageFilter.MedianFilter(3)))
    g = op.luma(a)[..., None]
    a = g + 1.25 * (a - g)
    q = op.to_image(a).quantize(colors=6, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    idx = np.asarray(q)
    pal = np.asarray(q.getpalette()[: 3 * 256], dtype=np.float32).reshape(-1, 3) / 255.0
    flat = pal[idx]
    border = np.zeros(idx.shape, bool)
    border[:, 1:] |= idx[:, 1:] != idx[:, :-1]
    border[1:, :] |= idx[1:, :] != idx[:-1, :]
    border = op.dilate(border, max(1, int(round(2 * u))))
    out = np.where(border[..., None], np.float32(0.04), flat)
    return op.to_image(out)


def sepia(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Old photograph: luminance mapped to a dark-brown -> cream sepia ramp,
    softened, with a strong vignette, film grain and a few faint scratches."""
    u = op.unit(img)
    a = op.blur(op.to_array(img), 0.5 * u)
    h, w = a.shape[:2]
    g = op.luma(a)
    g = 0.12 + 0.8 * g  # faded: lifted blacks, dull whites
    g = g + (op.noise(rng, h, w, u, smooth=0.4) - 0.5) * 0.25
    dark = np.array([0.17, 0.10, 0.05], np.float32)
    light = np.array([1.0, 0.90, 0.70], np.float32)
    out = dark + (light - dark) * np.clip(g, 0, 1)[..., None]
    y, x = op.grid(h, w)
    r2 = ((x / w - 0.5) ** 2 + (y / h - 0.5) ** 2) * 2.0
    vig = 1.0 - 0.75 * r2 ** 1.3
    out = out * vig[..., None]
    for _ in range(int(rng.integers(1, 4))):  # light vertical scratches
        cx = int(rng.integers(0, w))
        sl = slice(cx, cx + max(1, int(round(u))))
        out[:, sl] = 0.6 * out[:, sl] + 0.4 * light
    return op.to_image(out)


_INFERNO = np.array([
    [0.00, 0.00, 0.02], [0.16, 0.04, 0.36], [0.42, 0.08, 0.48],
    [0.70, 0.17, 0.38], [0.92, 0.35, 0.17], [0.99, 0.64, 0.04],
    [0.98, 0.92, 0.45], [1.00, 1.00, 0.95]], dtype=np.float32)


def thermal(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Thermal camera: a soft "heat" map (warm colours and bright areas read
    hot) rendered with a black-purple-red-orange-yellow-white false-colour
    ramp, with sensor noise and faint horizontal scan lines."""
    u = op.unit(img)
    a = op.blur(op.to_array(img), 1.2 * u)
    h, w = a.shape[:2]
    warm = np.clip(a[..., 0] - a[..., 2], 0, 1)
    heat = 0.55 * op.luma(a) + 0.55 * warm + 0.05
    lo, hi = np.percentile(heat, [2.0, 98.0])
    heat = 0.1 + 0.82 * (heat - lo) / max(float(hi - lo), 0.15)  # auto gain
    heat = heat + (op.noise(rng, h, w, u) - 0.5) * 0.07
    t = np.clip(heat, 0, 1) * (len(_INFERNO) - 1)
    i0 = np.clip(np.floor(t).astype(np.int32), 0, len(_INFERNO) - 2)
    f = (t - i0)[..., None]
    out = _INFERNO[i0] * (1 - f) + _INFERNO[i0 + 1] * f
    y = np.arange(h)
    scan = np.where((y // max(1, int(round(2 * u)))) % 2 == 0, 1.0, 0.9).astype(np.float32)
    out = out * scan[:, None, None]
    return op.to_image(out)
