"""Image-space "reference style" renderers for the procedural mini world.

Each style is a small, deterministic function that takes an RGB image (the
"plain" domain: simple coloured objects on simple backgrounds) and returns a
restyled RGB image of the same size.  The styles are designed to be

* clearly recognisable and mutually distinct already at 64x64 px,
* scale-consistent: every length (pixel block, dot pitch, hatch spacing, line
  width, blur radius) is expressed in units of ``min(width, height) / 64`` so a
  style looks the same at 64 px and at 512 px,
* content-preserving: the object's silhouette stays readable, and for the
  styles listed in :data:`COLOR_PRESERVING` its hue stays identifiable too,
* cheap: numpy + PIL only, a few milliseconds per 64x64 image.

Randomness (paper grain, tile jitter, ...) comes only from
``np.random.default_rng(seed)``, so ``apply_style(name, image, seed)`` is a pure
function of its arguments.

Public API::

    REFERENCE_STYLES   fixed-order tuple of style names (append-only; the index
                       of a name is a stable class id for classifiers)
    PLAIN              "plain", the unstyled base domain (not in REFERENCE_STYLES)
    COLOR_PRESERVING   styles after which the object's hue is still identifiable
    apply_style(name, image, seed=0) -> PIL.Image.Image
    describe_style(name) -> str
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image, ImageFilter

from generators.errors import UserError

__all__ = [
    "REFERENCE_STYLES",
    "PLAIN",
    "COLOR_PRESERVING",
    "apply_style",
    "describe_style",
]

PLAIN = "plain"

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def _arr(img: Image.Image) -> np.ndarray:
    """RGB PIL image -> float32 array (H, W, 3) in [0, 1]."""
    return np.asarray(img, dtype=np.float32) * np.float32(1.0 / 255.0)


def _img(a: np.ndarray) -> Image.Image:
    """Float array (H, W, 3) in [0, 1] (clipped) -> RGB PIL image."""
    return Image.fromarray(
        (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), "RGB"
    )


def _unit(img: Image.Image) -> float:
    """Length unit: one pixel of a 64 px image, scaled to this image."""
    return min(img.size) / 64.0


def _luma(a: np.ndarray) -> np.ndarray:
    return a @ _LUMA


def _blur(a: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur of a float [0, 1] array (2-D or RGB) via PIL (8-bit)."""
    if radius <= 0:
        return a
    if a.ndim == 2:
        im = Image.fromarray((np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8), "L")
        return _arr(im.filter(ImageFilter.GaussianBlur(radius)))
    return _arr(_img(a).filter(ImageFilter.GaussianBlur(radius)))


def _sobel(g: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of a 2-D array; a 0->1 step gives ~1."""
    p = np.pad(g, 1, mode="edge")
    gx = (2.0 * (p[1:-1, 2:] - p[1:-1, :-2])
          + (p[:-2, 2:] - p[:-2, :-2]) + (p[2:, 2:] - p[2:, :-2]))
    gy = (2.0 * (p[2:, 1:-1] - p[:-2, 1:-1])
          + (p[2:, :-2] - p[:-2, :-2]) + (p[2:, 2:] - p[:-2, 2:]))
    return np.sqrt(gx * gx + gy * gy) * 0.25


def _color_edges(a: np.ndarray) -> np.ndarray:
    """Edge strength of an RGB array: max Sobel magnitude over channels."""
    return np.maximum(np.maximum(_sobel(a[..., 0]), _sobel(a[..., 1])),
                      _sobel(a[..., 2]))


def _edge_map(img: Image.Image, u: float, pre_blur: float = 0.0) -> np.ndarray:
    """Scale-consistent colour edge strength at full resolution.

    Edges are measured on a copy reduced to the 64 px-equivalent grid (so a
    line is as thick, relative to the image, at 512 px as at 64 px) and
    upsampled bilinearly.  ``pre_blur`` is in 64 px units.
    """
    w, h = img.size
    if u <= 1.25:
        small = img
    else:
        small = img.resize((max(1, round(w / u)), max(1, round(h / u))), Image.BOX)
    a = _arr(small)
    if pre_blur > 0:
        a = _blur(a, pre_blur)
    e = _color_edges(a)
    if small is img:
        return e
    return np.asarray(Image.fromarray(e.astype(np.float32), "F").resize((w, h), Image.BILINEAR))


def _base_shape(h: int, w: int, u: float) -> tuple[int, int]:
    """Size of the 64 px-equivalent grid for an (h, w) image."""
    if u <= 1.25:
        return h, w
    return max(1, round(h / u)), max(1, round(w / u))


def _upsample(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of a 2-D float array to (h, w)."""
    if x.shape == (h, w):
        return x
    im = Image.fromarray(x.astype(np.float32), "F")
    return np.asarray(im.resize((w, h), Image.BILINEAR))


def _noise(rng: np.random.Generator, h: int, w: int, u: float,
           smooth: float = 0.0) -> np.ndarray:
    """Uniform [0, 1) noise drawn on the 64 px-equivalent grid (optionally
    Gaussian-smoothed by ``smooth`` base pixels) and upsampled, so textures
    have the same relative grain and contrast at every image size."""
    bh, bw = _base_shape(h, w, u)
    n = rng.random((bh, bw)).astype(np.float32)
    if smooth > 0:
        n = _blur(n, smooth)
    return _upsample(n, h, w)


def _dilate(mask: np.ndarray, size: int) -> np.ndarray:
    """Binary dilation of a 2-D bool mask with a ``size`` x ``size`` square
    (separable running max; even sizes extend one more pixel up/left)."""
    if size <= 1:
        return mask
    lo = (size - 1) // 2
    hi = size - 1 - lo
    out = mask
    for axis in (0, 1):
        acc = out.copy()
        n = out.shape[axis]
        for k in range(-hi, lo + 1):
            if k == 0 or abs(k) >= n:
                continue
            src = [slice(None), slice(None)]
            dst = [slice(None), slice(None)]
            if k > 0:
                src[axis], dst[axis] = slice(0, n - k), slice(k, n)
            else:
                src[axis], dst[axis] = slice(-k, n), slice(0, n + k)
            acc[tuple(dst)] |= out[tuple(src)]
        out = acc
    return out


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x) as float32 arrays of shape (h, w)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return y + 0.5, x + 0.5


def _hsv(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("HSV"), dtype=np.float32) * np.float32(1 / 255)


def _from_hsv(hsv: np.ndarray) -> np.ndarray:
    im = Image.fromarray((np.clip(hsv, 0, 1) * 255 + 0.5).astype(np.uint8), "HSV")
    return _arr(im.convert("RGB"))


# --------------------------------------------------------------------------
# renderers
# --------------------------------------------------------------------------

def _pixel_art(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Retro sprite look: 16x16 grid of big square pixels, a 4-level-per-channel
    (64 colour) palette with a saturation/contrast boost, dark outline blocks
    along object borders, upsampled with nearest neighbour."""
    w, h = img.size
    b = max(1, round(4 * _unit(img)))
    sw, sh = max(1, round(w / b)), max(1, round(h / b))
    small = _arr(img.resize((sw, sh), Image.BOX))
    # saturation + contrast boost around the grey axis
    g = _luma(small)[..., None]
    small = g + 1.35 * (small - g)
    small = 0.5 + 1.15 * (small - 0.5)
    q = np.round(np.clip(small, 0, 1) * 3.0) / 3.0
    # one-block dark outline on the darker side of strong borders
    lum = _luma(q)
    edge = _color_edges(q) > 0.45
    nb_max = np.asarray(
        Image.fromarray((lum * 255).astype(np.uint8), "L").filter(ImageFilter.MaxFilter(3)),
        dtype=np.float32) / 255.0
    darker = lum < nb_max - 0.08
    q = np.where((edge & darker)[..., None], q * 0.45, q)
    return _img(q).resize((w, h), Image.NEAREST)


def _pencil_sketch(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Graphite drawing: soft grey contour lines from luminance/colour edges plus
    light diagonal stroke shading that follows darkness, on grainy off-white
    paper.  Greyscale only."""
    u = _unit(img)
    a = _arr(img)
    h, w = a.shape[:2]
    g = _luma(a)
    edges = np.clip(1.6 * _edge_map(img, u, pre_blur=0.6) - 0.06, 0, 1)
    edges = np.clip(edges + 0.5 * _blur(edges, 0.8 * u), 0, 1)  # soft, smudged
    # directional stroke texture: noise smeared along a 45 degree diagonal,
    # built on the 64 px-equivalent grid and upsampled
    bh, bw = _base_shape(h, w, u)
    n = rng.random((bh, bw)).astype(np.float32)
    strokes = np.zeros_like(n)
    for k in range(6):
        strokes += np.roll(n, (k, k), axis=(0, 1))
    strokes = np.clip((strokes / 6 - 0.5) * 6.0 + 0.5, 0, 1)  # streaky
    strokes = _upsample(strokes, h, w)
    dark = np.clip((0.92 - g) / 0.92, 0, 1)
    shade = 0.55 * dark * strokes
    graphite = np.clip(np.maximum(edges, shade), 0, 0.9)
    paper = np.array([0.96, 0.945, 0.91], np.float32)
    grain = (_noise(rng, h, w, u) - 0.5) * 0.05
    lead = np.array([0.22, 0.22, 0.25], np.float32)
    out = paper + grain[..., None]
    out = out * (1 - graphite[..., None]) + lead * graphite[..., None]
    return _img(out)


def _watercolor(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Wet watercolour wash: colours lightened toward the paper, wobbly bled
    borders (smooth random displacement + blur), pigment pooled as darker
    rims at colour borders, blotchy granulation and paper grain."""
    u = _unit(img)
    a = _arr(img)
    h, w = a.shape[:2]
    y, x = _grid(h, w)
    # smooth random displacement -> wobbly, bleeding borders
    amp = 2.0 * u
    dy = (_noise(rng, h, w, u, smooth=2.5) - 0.5) * 8 * amp
    dx = (_noise(rng, h, w, u, smooth=2.5) - 0.5) * 8 * amp
    yi = np.clip((y + dy).astype(np.int32), 0, h - 1)
    xi = np.clip((x + dx).astype(np.int32), 0, w - 1)
    a = a[yi, xi]
    soft = _blur(a, 1.2 * u)
    wide = _blur(a, 3.0 * u)
    col = 0.75 * soft + 0.25 * wide  # colour bleeding into neighbours
    # pigment pooling: darker rim where the wash changes
    rim = np.clip(np.abs(soft - wide).sum(-1) * 2.2, 0, 1)
    # transparent wash: lift toward paper, keep hue
    paper = np.array([0.99, 0.97, 0.93], np.float32)
    g = _luma(col)[..., None]
    col = g + 1.15 * (col - g)
    col = 0.62 * col + 0.38 * paper
    col = col * (1 - 0.45 * rim[..., None])
    # blotchy granulation + fine paper grain
    blot = _noise(rng, h, w, u, smooth=3.0) - 0.5
    grain = _noise(rng, h, w, u) - 0.5
    col = col * (1 + 1.2 * blot[..., None] + 0.06 * grain[..., None])
    return _img(col)


def _halftone(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """CMYK print halftone: four rotated screens (C 15, M 75, Y 0, K 45 deg) of
    round dots whose area follows ink coverage, on white paper."""
    u = _unit(img)
    a = _blur(_arr(img), 0.8 * u)
    h, w = a.shape[:2]
    y, x = _grid(h, w)
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
    return _img(out)


def _neon_glow(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Neon signs at night: object/colour borders become thin fully saturated
    tubes with white-hot cores and a wide coloured glow, on a near-black
    background with only a faint hint of the original fill."""
    u = _unit(img)
    a = _arr(img)
    e = _edge_map(img, u)
    e = np.clip((e - 0.08) * 3.0, 0, 1)
    hsv = _hsv(img)
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
    neon = _from_hsv(np.stack([best_h, np.ones_like(best_h), np.ones_like(best_h)], -1))
    # neighbourhoods without usable colour -> electric cyan tubes
    neon = np.where((best_k < 0.1)[..., None], np.array([0.2, 1.0, 1.0], np.float32), neon)
    tube = neon * e[..., None]
    glow = _blur(tube, 2.0 * u) * 1.3 + _blur(tube, 5.0 * u) * 1.0
    core = np.clip(e - 0.85, 0, 1)[..., None] * 2.0
    bg = np.array([0.03, 0.02, 0.07], np.float32) + 0.08 * a
    out = bg + glow + 1.2 * tube + core
    out = 1.0 - np.exp(-1.5 * out)  # soft tone map keeps the tube hue saturated
    return _img(out)


def _mosaic(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Ceramic mosaic: jittered (Voronoi) tiles, each filled with the mean
    colour under its seed plus a small per-tile shade variation and bevel, separated
    by dark grout lines."""
    u = _unit(img)
    a = _arr(img)
    h, w = a.shape[:2]
    t = max(3.0, 5.0 * u)
    gh, gw = int(np.ceil(h / t)) + 1, int(np.ceil(w / t)) + 1
    jit = rng.uniform(0.15, 0.85, size=(gh, gw, 2)).astype(np.float32)
    sy = (np.arange(gh, dtype=np.float32)[:, None] - 0.5 + jit[..., 0]) * t
    sx = (np.arange(gw, dtype=np.float32)[None, :] - 0.5 + jit[..., 1]) * t
    y, x = _grid(h, w)
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
    sm = _blur(a, 0.6 * u)
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
    return _img(out)


def _flat_outline(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Cartoon / cel look: slightly saturated colours posterised to a small
    adaptive palette of flat fills, with thick black outlines around every
    colour region."""
    u = _unit(img)
    a = _arr(img.filter(ImageFilter.MedianFilter(3)))
    g = _luma(a)[..., None]
    a = g + 1.25 * (a - g)
    q = _img(a).quantize(colors=6, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    idx = np.asarray(q)
    pal = np.asarray(q.getpalette()[: 3 * 256], dtype=np.float32).reshape(-1, 3) / 255.0
    flat = pal[idx]
    border = np.zeros(idx.shape, bool)
    border[:, 1:] |= idx[:, 1:] != idx[:, :-1]
    border[1:, :] |= idx[1:, :] != idx[:-1, :]
    border = _dilate(border, max(1, int(round(2 * u))))
    out = np.where(border[..., None], np.float32(0.04), flat)
    return _img(out)


def _sepia(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Old photograph: luminance mapped to a dark-brown -> cream sepia ramp,
    softened, with a strong vignette, film grain and a few faint scratches."""
    u = _unit(img)
    a = _blur(_arr(img), 0.5 * u)
    h, w = a.shape[:2]
    g = _luma(a)
    g = 0.12 + 0.8 * g  # faded: lifted blacks, dull whites
    g = g + (_noise(rng, h, w, u, smooth=0.4) - 0.5) * 0.25
    dark = np.array([0.17, 0.10, 0.05], np.float32)
    light = np.array([1.0, 0.90, 0.70], np.float32)
    out = dark + (light - dark) * np.clip(g, 0, 1)[..., None]
    y, x = _grid(h, w)
    r2 = ((x / w - 0.5) ** 2 + (y / h - 0.5) ** 2) * 2.0
    vig = 1.0 - 0.75 * r2 ** 1.3
    out = out * vig[..., None]
    for _ in range(int(rng.integers(1, 4))):  # light vertical scratches
        cx = int(rng.integers(0, w))
        sl = slice(cx, cx + max(1, int(round(u))))
        out[:, sl] = 0.6 * out[:, sl] + 0.4 * light
    return _img(out)


def _pop_art(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Comic pop art: hues snapped to six bold primaries at full saturation,
    4-level posterised value (black / shade / colour / pale), greys become
    black or white, and regular Ben-Day dots printed over every colour area."""
    u = _unit(img)
    hsv = _hsv(img)
    h, w = hsv.shape[:2]
    hue = np.round(hsv[..., 0] * 12.0) % 12.0 / 12.0
    s, v = hsv[..., 1], hsv[..., 2]
    colorful = s > 0.12
    vq = np.where(v < 0.25, 0.0, np.where(v < 0.55, 0.6, 1.0))
    sq = np.where(colorful, np.where((v > 0.88) & (s < 0.35), 0.55, 1.0), 0.0)
    out = _from_hsv(np.stack([hue, sq, vq], -1))
    # Ben-Day dots on a 45 degree lattice, darker shade of the same colour
    y, x = _grid(h, w)
    p = max(3.0, 3.5 * u)
    uu = (x + y) / np.sqrt(2)
    vv = (x - y) / np.sqrt(2)
    du = uu - (np.floor(uu / p) + 0.5) * p
    dv = vv - (np.floor(vv / p) + 0.5) * p
    d = np.sqrt(du * du + dv * dv)
    dot = np.clip(0.33 * p - d + 0.5, 0, 1) * (colorful & (vq > 0))
    pale = (sq < 0.8)[..., None]
    full = _from_hsv(np.stack([hue, np.ones_like(sq), np.maximum(vq, 0.6)], -1))
    dotted = np.where(pale, full * 0.9, out * 0.5)
    out = out * (1 - dot[..., None]) + dotted * dot[..., None]
    return _img(out)


def _crosshatch(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Pen-and-ink: pure black hatching on white paper, up to four line layers
    (/, \\, -, |) added as the image gets darker, plus inked contours."""
    u = _unit(img)
    a = _arr(img)
    h, w = a.shape[:2]
    g = _luma(_blur(a, 0.5 * u))
    dark = 1.0 - g
    y, x = _grid(h, w)
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
    ink |= _edge_map(img, u) > 0.3
    paper = np.array([1.0, 1.0, 0.985], np.float32)
    out = np.where(ink[..., None], np.float32(0.03), paper)
    return _img(out)


def _blueprint(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Technical blueprint: crisp white contour lines traced from the image
    edges, over a deep cyanotype blue with a faint square drafting grid and a
    very faint tint of the original luminance."""
    u = _unit(img)
    a = _arr(img)
    h, w = a.shape[:2]
    e = _edge_map(img, u, pre_blur=0.4)
    line = np.clip((e - 0.12) * 4.0, 0, 1)
    y, x = _grid(h, w)
    step = max(4.0, 8.0 * u)
    gw = max(1.0, u)
    grid = ((np.mod(x, step) < gw) | (np.mod(y, step) < gw)).astype(np.float32)
    bg = np.array([0.06, 0.22, 0.55], np.float32)
    g = _luma(a)
    out = bg * (0.85 + 0.3 * g[..., None]) + 0.09 * grid[..., None]
    white = np.array([0.93, 0.97, 1.0], np.float32)
    out = out + (white - out) * np.clip(line, 0, 1)[..., None]
    return _img(out)


_INFERNO = np.array([
    [0.00, 0.00, 0.02], [0.16, 0.04, 0.36], [0.42, 0.08, 0.48],
    [0.70, 0.17, 0.38], [0.92, 0.35, 0.17], [0.99, 0.64, 0.04],
    [0.98, 0.92, 0.45], [1.00, 1.00, 0.95]], dtype=np.float32)


def _thermal(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Thermal camera: a soft "heat" map (warm colours and bright areas read
    hot) rendered with a black-purple-red-orange-yellow-white false-colour
    ramp, with sensor noise and faint horizontal scan lines."""
    u = _unit(img)
    a = _blur(_arr(img), 1.2 * u)
    h, w = a.shape[:2]
    warm = np.clip(a[..., 0] - a[..., 2], 0, 1)
    heat = 0.55 * _luma(a) + 0.55 * warm + 0.05
    lo, hi = np.percentile(heat, [2.0, 98.0])
    heat = 0.1 + 0.82 * (heat - lo) / max(float(hi - lo), 0.15)  # auto gain
    heat = heat + (_noise(rng, h, w, u) - 0.5) * 0.07
    t = np.clip(heat, 0, 1) * (len(_INFERNO) - 1)
    i0 = np.clip(np.floor(t).astype(np.int32), 0, len(_INFERNO) - 2)
    f = (t - i0)[..., None]
    out = _INFERNO[i0] * (1 - f) + _INFERNO[i0 + 1] * f
    y = np.arange(h)
    scan = np.where((y // max(1, int(round(2 * u)))) % 2 == 0, 1.0, 0.9).astype(np.float32)
    out = out * scan[:, None, None]
    return _img(out)


# --------------------------------------------------------------------------
# registry and public API
# --------------------------------------------------------------------------

_Renderer = Callable[[Image.Image, np.random.Generator], Image.Image]

# Fixed, append-only order: the index of a name is its class id.
_REGISTRY: dict[str, tuple[_Renderer, str]] = {
    "pixel_art": (_pixel_art, "chunky 16x16-grid pixels with a 64-colour retro palette and dark sprite outlines"),
    "pencil_sketch": (_pencil_sketch, "soft grey graphite contours and diagonal pencil shading on grainy off-white paper"),
    "watercolor": (_watercolor, "light, bleeding watercolour washes with darker pigment rims and blotchy paper texture"),
    "halftone": (_halftone, "CMYK print of small rotated cyan, magenta, yellow and black dot screens on white paper"),
    "neon_glow": (_neon_glow, "glowing saturated neon tubes along the shapes' edges on a near-black background"),
    "mosaic": (_mosaic, "irregular ceramic tiles of flat colour separated by dark grout lines"),
    "flat_outline": (_flat_outline, "cartoon cel shading: a few flat posterised colours with thick black outlines"),
    "sepia": (_sepia, "faded brown-and-cream old photograph with vignette, film grain and scratches"),
    "pop_art": (_pop_art, "comic pop art: bold fully saturated primary colours covered in Ben-Day dots"),
    "crosshatch": (_crosshatch, "black pen-and-ink crosshatching whose density follows darkness, on white paper"),
    "blueprint": (_blueprint, "white technical-drawing contour lines on deep blue with a faint drafting grid"),
    "thermal": (_thermal, "thermal-camera false colours from black through purple, red and orange to yellow-white"),
}

REFERENCE_STYLES: tuple[str, ...] = tuple(_REGISTRY)
"""Style names in fixed, append-only order (index = stable class id)."""

COLOR_PRESERVING: frozenset[str] = frozenset(
    {"pixel_art", "watercolor", "mosaic", "flat_outline", "pop_art"}
)
"""Styles after which the object's hue is still identifiable."""


def _valid_names() -> str:
    return ", ".join((PLAIN,) + REFERENCE_STYLES)


def describe_style(name: str) -> str:
    """One-line plain-words description of a style (or of ``"plain"``)."""
    if name == PLAIN:
        return "the unstyled base rendering: flat coloured objects on a simple background"
    try:
        return _REGISTRY[name][1]
    except (KeyError, TypeError):
        raise UserError(f"unknown style {name!r}; valid styles: {_valid_names()}") from None


def apply_style(name: str, image: Image.Image, seed: int = 0) -> Image.Image:
    """Render ``image`` in style ``name``.

    RGB in, RGB out, same size.  Deterministic given ``(name, image, seed)``.
    ``"plain"`` returns an RGB copy.  Unknown names raise ``UserError`` listing
    the valid styles.  Non-RGB inputs are converted to RGB first.
    """
    if name != PLAIN and name not in _REGISTRY:
        raise UserError(f"unknown style {name!r}; valid styles: {_valid_names()}")
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL.Image.Image, got {type(image).__name__}")
    img = image.convert("RGB") if image.mode != "RGB" else image.copy()
    if name == PLAIN:
        return img
    rng = np.random.default_rng(seed)
    out = _REGISTRY[name][0](img, rng)
    if out.mode != "RGB":
        out = out.convert("RGB")
    assert out.size == img.size, (name, out.size, img.size)
    return out
