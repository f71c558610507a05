"""Shared pixel operations of the reference style renderers (styles/reference.py).

Images travel as float32 arrays (H, W, 3) in [0, 1]. Every length is in units of
:func:`unit`, one pixel of a 64 px image scaled to the image at hand, and textures are
drawn on the 64 px-equivalent grid (:func:`base_shape`, :func:`noise`) and upsampled, so a
style looks the same at 64 px and at 512 px. numpy + PIL only.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def to_array(img: Image.Image) -> np.ndarray:
    """RGB PIL image -> float32 array (H, W, 3) in [0, 1]."""
    return np.asarray(img, dtype=np.float32) * np.float32(1.0 / 255.0)


def to_image(a: np.ndarray) -> Image.Image:
    """Float array (H, W, 3) in [0, 1] (clipped) -> RGB PIL image."""
    return Image.fromarray(
        (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), "RGB"
    )


def unit(img: Image.Image) -> float:
    """Length unit: one pixel of a 64 px image, scaled to this image."""
    return min(img.size) / 64.0


def luma(a: np.ndarray) -> np.ndarray:
    return a @ _LUMA


def blur(a: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur of a float [0, 1] array (2-D or RGB) via PIL (8-bit)."""
    if radius <= 0:
        return a
    if a.ndim == 2:
        im = Image.fromarray((np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8), "L")
        return to_array(im.filter(ImageFilter.GaussianBlur(radius)))
    return to_array(to_image(a).filter(ImageFilter.GaussianBlur(radius)))


def sobel(g: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of a 2-D array; a 0->1 step gives ~1."""
    p = np.pad(g, 1, mode="edge")
    gx = (2.0 * (p[1:-1, 2:] - p[1:-1, :-2])
          + (p[:-2, 2:] - p[:-2, :-2]) + (p[2:, 2:] - p[2:, :-2]))
    gy = (2.0 * (p[2:, 1:-1] - p[:-2, 1:-1])
          + (p[2:, :-2] - p[:-2, :-2]) + (p[2:, 2:] - p[:-2, 2:]))
    return np.sqrt(gx * gx + gy * gy) * 0.25


def color_edges(a: np.ndarray) -> np.ndarray:
    """Edge strength of an RGB array: max Sobel magnitude over channels."""
    return np.maximum(np.maximum(sobel(a[..., 0]), sobel(a[..., 1])),
                      sobel(a[..., 2]))


def edge_map(img: Image.Image, u: float, pre_blur: float = 0.0) -> np.ndarray:
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
    a = to_array(small)
    if pre_blur > 0:
        a = blur(a, pre_blur)
    e = color_edges(a)
    if small is img:
        return e
    return np.asarray(Image.fromarray(e.astype(np.float32), "F").resize((w, h), Image.BILINEAR))


def base_shape(h: int, w: int, u: float) -> tuple[int, int]:
    """Size of the 64 px-equivalent grid for an (h, w) image."""
    if u <= 1.25:
        return h, w
    return max(1, round(h / u)), max(1, round(w / u))


def upsample(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of a 2-D float array to (h, w)."""
    if x.shape == (h, w):
        return x
    im = Image.fromarray(x.astype(np.float32), "F")
    return np.asarray(im.resize((w, h), Image.BILINEAR))


def noise(rng: np.random.Generator, h: int, w: int, u: float,
           smooth: float = 0.0) -> np.ndarray:
    """Uniform [0, 1) noise drawn on the 64 px-equivalent grid (optionally
    Gaussian-smoothed by ``smooth`` base pixels) and upsampled, so textures
    have the same relative grain and contrast at every image size."""
    bh, bw = base_shape(h, w, u)
    n = rng.random((bh, bw)).astype(np.float32)
    if smooth > 0:
        n = blur(n, smooth)
    return upsample(n, h, w)


def dilate(mask: np.ndarray, size: int) -> np.ndarray:
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


def grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x) as float32 arrays of shape (h, w)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return y + 0.5, x + 0.5


def hsv(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("HSV"), dtype=np.float32) * np.float32(1 / 255)


def from_hsv(hsv: np.ndarray) -> np.ndarray:
    im = Image.fromarray((np.clip(hsv, 0, 1) * 255 + 0.5).astype(np.uint8), "HSV")
    return to_array(im.convert("RGB"))
