"""The pretraining world's style space: procedural image-space style components with words.

A real text-to-image base already draws thousands of styles when they are named, and a museum's
learnt token moves inside that space. studio-mini learns such a space here: each styled
pretraining image applies one to three *components* (at most one per group) with random
parameters, and its caption ends with their words ("..., at the top right, pixelated, warm
palette, thin black outline"). Background replacements ("black background") override the
caption's own background word, as a style overrides what the content words would draw. The
twelve reference styles (styles/reference.py) are not in the family: they are what the museum
teaches later. `bench/style_family.py` measures that the style evaluator does not take family
renderings for the forgetting benchmark's styles.

Pretraining captions also take the prompt forms the product itself writes (`pretraining_caption`):
with and without the colour word, with a category word ("picture", "object"), birds named by
subclass, BOB's template and DataDream's short form.

Everything is a pure function of (image, rng[, the object's mask]): numpy + PIL, a few
milliseconds per 64 px image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter

from generators.errors import UserError

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class Component:
    name: str  # the words that end a caption
    group: str  # at most one component per group in one image
    render: Callable[..., np.ndarray]  # (H×W×3 float32 in [0, 1], rng[, object mask H×W]) -> same
    needs_mask: bool = False  # render takes the object's coverage (miniworld.generate(..., with_mask=True))


def _luma(a: np.ndarray) -> np.ndarray:
    return a @ _LUMA


def _unit(a: np.ndarray) -> float:
    """Lengths scale with the image: one unit is a pixel at 64 px."""
    return min(a.shape[:2]) / 64.0


def _edges(a: np.ndarray) -> np.ndarray:
    """Colour-gradient magnitude (max over channels of the forward differences), H×W in [0, ~1]."""
    gx = np.zeros_like(a)
    gy = np.zeros_like(a)
    gx[:, 1:] = np.abs(a[:, 1:] - a[:, :-1])
    gy[1:, :] = np.abs(a[1:, :] - a[:-1, :])
    return np.maximum(gx, gy).max(-1)


def _dilate(mask: np.ndarray, size: int) -> np.ndarray:
    if size <= 1:
        return mask
    img = Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(size | 1))
    return np.asarray(img) > 127


def _coords(a: np.ndarray, rng: np.random.Generator, pitch: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by a random angle and divided by the pitch (pattern units)."""
    h, w = a.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    along = (x * np.cos(theta) + y * np.sin(theta)) / pitch + rng.uniform(0, 1)
    across = (-x * np.sin(theta) + y * np.cos(theta)) / pitch + rng.uniform(0, 1)
    return along, across


def _ink(rng: np.random.Generator) -> np.ndarray:
    """A pattern colour: dark or light, slightly tinted."""
    base = 0.08 if rng.random() < 0.5 else 0.92
    return np.clip(base + rng.uniform(-0.08, 0.08, 3), 0, 1).astype(np.float32)


# --- components -----------------------------------------------------------------------------


def _backdrop(kind: str):
    """Background replacement: the object kept (its antialiased coverage), everything else one
    flat colour; the caption's own background word is overridden, as a style overrides it."""

    def render(a, rng, mask):
        if kind == "black":
            colour = rng.uniform(0.0, 0.1) + rng.uniform(0, 0.04, 3)
        elif kind == "white":
            colour = rng.uniform(0.88, 0.96) + rng.uniform(0, 0.04, 3)
        else:  # a saturated flat colour of random hue, mid brightness
            hue = rng.uniform(0, 1)
            colour = np.clip(np.abs((hue * 6 + np.array([0, 4, 2])) % 6 - 3) - 1, 0, 1) * rng.uniform(0.5, 0.8) + 0.1
        m = mask[..., None]
        return m * a + (1 - m) * colour.astype(np.float32)

    return render


def _pixelated(a, rng):
    h, w = a.shape[:2]
    block = max(2, round(rng.uniform(2.5, 5.5) * _unit(a)))
    img = Image.fromarray((a * 255).astype(np.uint8))
    small = img.resize((max(1, round(w / block)), max(1, round(h / block))), Image.BOX)
    return np.asarray(small.resize((w, h), Image.NEAREST), dtype=np.float32) / 255


def _blurry(a, rng):
    img = Image.fromarray((a * 255).astype(np.uint8))
    return np.asarray(img.filter(ImageFilter.GaussianBlur(rng.uniform(1.0, 2.0) * _unit(a))), dtype=np.float32) / 255


def _posterized(a, rng):
    levels = int(rng.integers(2, 4))
    return np.round(a * (levels - 1)) / (levels - 1)


def _tint(a, rng, gains, offset):
    strength = rng.uniform(0.7, 1.0)
    g = _luma(a)[..., None]
    toned = np.clip((0.6 * a + 0.4 * g) * np.array(gains, np.float32) + np.array(offset, np.float32), 0, 1)
    return (1 - strength) * a + strength * toned


def _warm(a, rng):
    return _tint(a, rng, (1.15, 0.92, 0.62), (0.10, 0.04, 0.0))


def _cool(a, rng):
    return _tint(a, rng, (0.62, 0.92, 1.15), (0.0, 0.04, 0.10))


def _greyscale(a, rng):
    return np.repeat(_luma(a)[..., None], 3, -1)


def _inverted(a, rng):
    return 1 - a


def _high_contrast(a, rng):
    g = _luma(a)[..., None]
    boosted = g + rng.uniform(1.4, 1.8) * (a - g)
    return 0.5 + rng.uniform(1.5, 1.9) * (boosted - 0.5)


def _pattern(a, mask, colour, alpha):
    return a * (1 - alpha * mask[..., None]) + colour * (alpha * mask[..., None])


def _dotted(a, rng):
    u = _unit(a)
    along, across = _coords(a, rng, rng.uniform(4, 7) * u)
    d = np.hypot(np.remainder(along, 1) - 0.5, np.remainder(across, 1) - 0.5)
    return _pattern(a, (d < rng.uniform(0.18, 0.28)).astype(np.float32), _ink(rng), rng.uniform(0.7, 1.0))


def _striped(a, rng):
    along, _ = _coords(a, rng, rng.uniform(4, 8) * _unit(a))
    return _pattern(a, (np.remainder(along, 1) < rng.uniform(0.2, 0.35)).astype(np.float32), _ink(rng), rng.uniform(0.4, 0.7))


def _grid_lines(a, rng):
    along, across = _coords(a, rng, rng.uniform(6, 10) * _unit(a))
    width = rng.uniform(0.1, 0.18)
    mask = (np.remainder(along, 1) < width) | (np.remainder(across, 1) < width)
    return _pattern(a, mask.astype(np.float32), _ink(rng), rng.uniform(0.5, 0.8))


def _grainy(a, rng):
    noise = rng.normal(0, rng.uniform(0.09, 0.16), a.shape[:2]).astype(np.float32)
    return np.clip(a + noise[..., None], 0, 1)


def _outline(colour: float, thick: bool):
    def render(a, rng):
        e = _edges(a)
        mask = _dilate(e > 0.25, 2 * max(1, round(_unit(a))) + 1 if thick else 1)
        return np.where(mask[..., None], np.float32(colour), a)

    return render


def _vignette(a, rng):
    h, w = a.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.hypot((x - (w - 1) / 2) / (w / 2), (y - (h - 1) / 2) / (h / 2))
    dark = 0.6 * np.clip((r - rng.uniform(0.7, 0.85)) * rng.uniform(1.5, 2.5), 0, 1)
    return a * (1 - dark[..., None])


def _framed(a, rng):
    out = a.copy()
    b = max(2, round(rng.uniform(3, 5) * _unit(a)))
    colour = rng.uniform(0, 1, 3).astype(np.float32)
    out[:b], out[-b:], out[:, :b], out[:, -b:] = colour, colour, colour, colour
    return out


# Application order is the groups' order here, and the caption's words follow it.
COMPONENTS: tuple[Component, ...] = (
    Component("black background", "backdrop", _backdrop("black"), needs_mask=True),
    Component("white background", "backdrop", _backdrop("white"), needs_mask=True),
    Component("flat colour background", "backdrop", _backdrop("colour"), needs_mask=True),
    Component("pixelated", "detail", _pixelated),
    Component("blurry", "detail", _blurry),
    Component("posterized", "detail", _posterized),
    Component("warm palette", "palette", _warm),
    Component("cool palette", "palette", _cool),
    Component("greyscale", "palette", _greyscale),
    Component("inverted colours", "palette", _inverted),
    Component("high contrast", "palette", _high_contrast),
    Component("dotted", "texture", _dotted),
    Component("striped", "texture", _striped),
    Component("grid lines", "texture", _grid_lines),
    Component("grainy", "texture", _grainy),
    Component("thin black outline", "outline", _outline(0.03, thick=False)),
    Component("thick black outline", "outline", _outline(0.03, thick=True)),
    Component("thin white outline", "outline", _outline(0.97, thick=False)),
    Component("thick white outline", "outline", _outline(0.97, thick=True)),
    Component("vignette", "frame", _vignette),
    Component("framed", "frame", _framed),
)
COMPONENT_NAMES = tuple(c.name for c in COMPONENTS)
GROUPS = tuple(dict.fromkeys(c.group for c in COMPONENTS))
# Pairs never drawn together: inverting a replaced background would contradict its word.
EXCLUDED = {frozenset((b, "inverted colours")) for b in COMPONENT_NAMES if b.endswith(" background")}


def compatible(names) -> bool:
    return not any(frozenset((x, y)) in EXCLUDED for x in names for y in names)


def words() -> list[str]:
    """Every word the family's captions add (for the tokenizer)."""
    return sorted({w for c in COMPONENTS for w in c.name.split()})


def sample_components(rng: np.random.Generator, max_components: int = 3,
                      emphasis: dict[str, float] | None = None) -> tuple[str, ...]:
    """One to max_components components from distinct groups, in application order.

    emphasis: a weight per component name (others 1): a member is drawn in proportion to its
    weight, a group in proportion to its members' mean weight, so the weights shift the data mix
    toward the components a base draws worst. None draws every group and member uniformly."""
    k = int(rng.choice([1, 2, 3][:max_components], p=np.array([0.5, 0.35, 0.15][:max_components]) /
                       sum([0.5, 0.35, 0.15][:max_components])))
    p = None  # uniform: the draw (and random stream) every base so far was trained on
    if emphasis:
        weight = np.array([np.mean([emphasis.get(c.name, 1.0) for c in COMPONENTS if c.group == g]) for g in GROUPS])
        p = weight / weight.sum()
    groups = set(rng.choice(len(GROUPS), size=k, replace=False, p=p).tolist())
    picked = []
    for g in sorted(groups):
        picked.append(draw_member(GROUPS[g], picked, rng, emphasis))
    return tuple(sorted(picked, key=COMPONENT_NAMES.index))


def draw_member(group: str, picked, rng: np.random.Generator, emphasis: dict[str, float] | None = None) -> str:
    """One member of `group` among those `compatible` with the components already picked:
    uniformly, or in proportion to `emphasis` weights (others 1)."""
    members = [c.name for c in COMPONENTS if c.group == group and compatible([*picked, c.name])]
    if not emphasis:
        return members[int(rng.integers(len(members)))]
    weight = np.array([emphasis.get(m, 1.0) for m in members])
    return members[int(rng.choice(len(members), p=weight / weight.sum()))]


def check_emphasis(emphasis: dict) -> None:
    """A concise error for a weight that names no component or is not positive."""
    unknown = sorted(set(emphasis) - set(COMPONENT_NAMES))
    if unknown:
        raise UserError(f"family_emphasis names no component: {unknown}; components: {list(COMPONENT_NAMES)}")
    bad = {k: v for k, v in emphasis.items() if not isinstance(v, (int, float)) or v <= 0}
    if bad:
        raise UserError(f"family_emphasis weights must be positive numbers, got {bad}")


def apply_components(image: Image.Image, names, rng: np.random.Generator, mask: np.ndarray | None = None) -> Image.Image:
    """The image with each named component applied in the family's order. mask: the object's
    coverage (miniworld.generate(..., with_mask=True)), needed by the background replacements."""
    unknown = [n for n in names if n not in COMPONENT_NAMES]
    if unknown:
        raise UserError(f"unknown style components {unknown}; choose from {', '.join(COMPONENT_NAMES)}")
    a = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    for c in COMPONENTS:
        if c.name in names:
            if c.needs_mask and mask is None:
                raise UserError(f"style component {c.name!r} replaces the background: pass the object's mask "
                                f"(miniworld.generate(..., with_mask=True))")
            a = np.clip(c.render(a, rng, mask) if c.needs_mask else c.render(a, rng), 0, 1)
    return Image.fromarray((a * 255 + 0.5).astype(np.uint8))


# --- caption forms ----------------------------------------------------------------------------

CATEGORY_WORDS = ("picture", "object")


def pretraining_caption(attrs, rng: np.random.Generator) -> str:
    """One of the caption forms the product prompts with, for a mini-world `Attributes`.

    Birds are named by subclass most of the time ("a sparrow bird", BOB's and DataDream's class
    phrase); half the captions drop the colour word; other kinds sometimes carry a category word
    ("a fish picture"); a fifth drop the pose (and a tenth the background too: DataDream's short form).
    """
    colour = f"{attrs.color} " if rng.random() < 0.5 else ""
    if attrs.subclass is not None and rng.random() < 0.9:
        thing = f"{attrs.subclass} bird"
    elif attrs.subclass is None and rng.random() < 0.3:
        thing = f"{attrs.kind} {CATEGORY_WORDS[int(rng.integers(len(CATEGORY_WORDS)))]}"
    else:
        thing = attrs.kind
    form = rng.random()
    if form < 0.1:
        return f"a {colour}{thing}"
    if form < 0.3:
        return f"a {colour}{thing} on the {attrs.background} background"
    tilt = "" if attrs.tilt == "upright" else f", {attrs.tilt}"
    where = "in the center" if attrs.position == "center" else f"at the {attrs.position}"
    return f"a {colour}{thing} on the {attrs.background} background, {attrs.scale}, facing {attrs.facing}{tilt}, {where}"
