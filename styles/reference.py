"""The image-space "reference styles" of the procedural mini world: their registry and public API.

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

The renderers live in three modules grouped by how they draw: ``reference_lines``
(from the image's edges), ``reference_cells`` (cells, dots, tiles) and
``reference_tones`` (colour and tone remapping), on the shared pixel operations of
``reference_ops``. This module is the registry and the public API::

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
from PIL import Image

from generators.errors import UserError
from styles import reference_cells as cells
from styles import reference_lines as lines
from styles import reference_tones as tones

__all__ = [
    "REFERENCE_STYLES",
    "PLAIN",
    "COLOR_PRESERVING",
    "apply_style",
    "describe_style",
]

PLAIN = "plain"

_Renderer = Callable[[Image.Image, np.random.Generator], Image.Image]

# Fixed, append-only order: the index of a name is its class id.
_REGISTRY: dict[str, tuple[_Renderer, str]] = {
    "pixel_art": (cells.pixel_art, "chunky 16x16-grid pixels with a 64-colour retro palette and dark sprite outlines"),
    "pencil_sketch": (lines.pencil_sketch, "soft grey graphite contours and diagonal pencil shading on grainy off-white paper"),
    "watercolor": (tones.watercolor, "light, bleeding watercolour washes with darker pigment rims and blotchy paper texture"),
    "halftone": (cells.halftone, "CMYK print of small rotated cyan, magenta, yellow and black dot screens on white paper"),
    "neon_glow": (lines.neon_glow, "glowing saturated neon tubes along the shapes' edges on a near-black background"),
    "mosaic": (cells.mosaic, "irregular ceramic tiles of flat colour separated by dark grout lines"),
    "flat_outline": (tones.flat_outline, "cartoon cel shading: a few flat posterised colours with thick black outlines"),
    "sepia": (tones.sepia, "faded brown-and-cream old photograph with vignette, film grain and scratches"),
    "pop_art": (cells.pop_art, "comic pop art: bold fully saturated primary colours covered in Ben-Day dots"),
    "crosshatch": (lines.crosshatch, "black pen-and-ink crosshatching whose density follows darkness, on white paper"),
    "blueprint": (lines.blueprint, "white technical-drawing contour lines on deep blue with a faint drafting grid"),
    "thermal": (tones.thermal, "thermal-camera false colours from black through purple, red and orange to yellow-white"),
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
