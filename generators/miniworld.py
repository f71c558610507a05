"""The procedural mini world: our offline stand-in for datasets we cannot download.

Every image is a function of (seed, index): attributes are drawn from
``np.random.default_rng([seed, index])`` and the picture is drawn from them with PIL
(4x supersampled, then downsampled), so the same seed gives byte-identical files.

An image holds one object: a kind (distinct silhouettes), or a bird of one of the
fine-grained subclasses (same silhouette; they differ only in beak, tail, crest and
wing stripes, never in colour), a named colour, a background and a pose (position on a
3x3 grid, scale, tilt, facing). Its caption is built from the attributes in plain words.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from generators.errors import UserError
from generators.run import Run, as_run

KINDS = ("star", "heart", "house", "tree", "fish", "car", "moon", "umbrella", "flower", "boat", "bird")
# Fine-grained bird subclasses: (beak, tail, crest, wing stripes). Each pair of subclasses
# differs in one or two small parts only, so they are hard at a few shots.
BIRD_SUBCLASSES = {
    "sparrow": ("short", "round", False, 0),
    "finch": ("short", "fork", False, 1),
    "robin": ("short", "round", True, 1),
    "wren": ("short", "up", False, 2),
    "jay": ("short", "fork", True, 2),
    "tern": ("long", "fork", False, 0),
    "warbler": ("long", "round", False, 1),
    "lark": ("long", "up", True, 0),
    "heron": ("long", "round", True, 2),
    "kite": ("hook", "fork", False, 2),
    "shrike": ("hook", "round", True, 0),
    "falcon": ("hook", "up", False, 1),
}
COLORS = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (245, 220, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "purple": (140, 50, 190),
    "pink": (250, 130, 190),
    "brown": (130, 80, 40),
}
BACKGROUNDS = ("sky", "grass", "sea", "desert", "night", "snow", "forest", "indoor")
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
SCALES = {"small": 0.36, "medium": 0.5, "large": 0.66}
TILTS = {"upright": 0.0, "tilted left": 25.0, "tilted right": -25.0}
FACINGS = ("left", "right")
SUPERSAMPLE = 4


@dataclass(frozen=True)
class Attributes:
    """Everything that determines one image (besides the seeded texture of its background)."""

    kind: str
    color: str
    background: str
    position: str
    scale: str
    tilt: str
    facing: str
    subclass: str | None = None

    @property
    def caption(self) -> str:
        """Plain words, e.g. 'a red fish on the sea background, small, facing left, at the top right'."""
        tilt = "" if self.tilt == "upright" else f", {self.tilt}"
        where = "in the center" if self.position == "center" else f"at the {self.position}"
        return f"a {self.color} {self.kind} on the {self.background} background, {self.scale}, facing {self.facing}{tilt}, {where}"

    def species_caption(self, with_colour: bool = True) -> str:
        """The caption with a bird's subclass named: 'a red sparrow bird on the sky background, ...'
        (with_colour=False: 'a sparrow bird on ...')."""
        if self.subclass is None:
            return self.caption
        colour = f"{self.color} " if with_colour else ""
        return self.caption.replace(f"a {self.color} bird ", f"a {colour}{self.subclass} bird ", 1)


@dataclass(frozen=True)
class Sample:
    attributes: Attributes
    image: Image.Image
    seed: int
    index: int
    mask: np.ndarray | None = None  # the object's coverage (generate(..., with_mask=True))


def attribute_vocabulary() -> dict[str, tuple[str, ...]]:
    """Every value each attribute can take (the evaluators' label spaces)."""
    return {
        "kind": KINDS,
        "subclass": tuple(BIRD_SUBCLASSES),
        "color": tuple(COLORS),
        "background": BACKGROUNDS,
        "position": POSITIONS,
        "scale": tuple(SCALES),
        "tilt": tuple(TILTS),
        "facing": FACINGS,
    }


def caption_words() -> list[str]:
    """All words a caption can contain (used to build the embedded tokenizer's vocabulary)."""
    words = set("a on the background facing at in center tilted".split())
    for values in attribute_vocabulary().values():
        for value in values:
            words.update(value.split())
    return sorted(words)


def is_held_out(kind: str, color: str, background: str) -> bool:
    """About 1 in 8 (kind, colour, background) triples never appear in base pretraining.

    `studio eval base` prompts with these, so it measures composition, not memory.
    """
    digest = hashlib.sha256(f"{kind}|{color}|{background}".encode()).digest()
    return digest[0] % 8 == 0


def sample_attributes(
    rng: np.random.Generator,
    kinds: tuple[str, ...] = KINDS,
    held_out: bool | None = None,
    subclasses: tuple[str, ...] | None = None,
    scales: tuple[str, ...] | None = None,
) -> Attributes:
    """Draw attributes uniformly. held_out=False excludes held-out triples, True keeps only them."""
    while True:
        kind = kinds[rng.integers(len(kinds))]
        color = tuple(COLORS)[rng.integers(len(COLORS))]
        background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
        if held_out is None or is_held_out(kind, color, background) == held_out:
            break
    subclass = None
    if kind == "bird":
        names = subclasses or tuple(BIRD_SUBCLASSES)
        subclass = names[rng.integers(len(names))]
    scale_names = scales or tuple(SCALES)
    return Attributes(
        kind=kind,
        color=color,
        background=background,
        position=POSITIONS[rng.integers(len(POSITIONS))],
        scale=scale_names[rng.integers(len(scale_names))],
        tilt=tuple(TILTS)[rng.integers(len(TILTS))],
        facing=FACINGS[rng.integers(len(FACINGS))],
        subclass=subclass,
    )


# --- drawing -----------------------------------------------------------------------------
# Shapes are lists of (fill, polygon) parts in unit coordinates: x, y in [-1, 1], y down,
# facing right. "body" parts take the object's colour; others name a fixed colour.

DARK = (20, 20, 20)
LIGHT_DETAIL = (250, 250, 240)


def _circle(cx, cy, r, n=24):
    return [(cx + r * math.cos(2 * math.pi * i / n), cy + r * math.sin(2 * math.pi * i / n)) for i in range(n)]


def _rect(x0, y0, x1, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _star():
    pts = []
    for i in range(10):
        r = 0.95 if i % 2 == 0 else 0.4
        a = -math.pi / 2 + i * math.pi / 5
        pts.append((r * math.cos(a), r * math.sin(a)))
    return [("body", pts)]


def _heart():
    pts = []
    for i in range(40):
        t = 2 * math.pi * i / 40
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((x / 17.0, -y / 17.0 - 0.1))
    return [("body", pts)]


def _house():
    return [
        ("body", _rect(-0.7, -0.1, 0.7, 0.9)),
        ("body", [(-0.9, -0.1), (0.0, -0.9), (0.9, -0.1)]),
        (DARK, _rect(0.15, 0.35, 0.45, 0.9)),
        (LIGHT_DETAIL, _rect(-0.5, 0.15, -0.15, 0.45)),
    ]


def _tree():
    return [
        ((110, 70, 30), _rect(-0.15, 0.3, 0.15, 0.95)),
        ("body", [(0.0, -0.95), (0.75, 0.4), (-0.75, 0.4)]),
    ]


def _fish():
    body = [(0.9 * math.cos(t), 0.5 * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 28, endpoint=False)]
    body = [(x + 0.15, y) for x, y in body]
    return [
        ("body", [(-0.95, -0.55), (-0.55, 0.0), (-0.95, 0.55)]),
        ("body", body),
        (DARK, _circle(0.65, -0.1, 0.09, 10)),
    ]


def _car():
    return [
        ("body", _rect(-0.95, -0.05, 0.95, 0.45)),
        ("body", [(-0.5, -0.05), (-0.3, -0.5), (0.35, -0.5), (0.6, -0.05)]),
        (LIGHT_DETAIL, [(-0.35, -0.1), (-0.22, -0.4), (0.0, -0.4), (0.0, -0.1)]),
        (DARK, _circle(-0.5, 0.5, 0.22, 14)),
        (DARK, _circle(0.5, 0.5, 0.22, 14)),
    ]


def _moon():
    """A thick crescent: the outer circle's left arc, then an offset inner circle's arc back."""
    outer = [(0.9 * math.cos(a), 0.9 * math.sin(a)) for a in np.linspace(math.pi / 3, 5 * math.pi / 3, 24)]
    inner = [(0.45 + 0.7 * math.cos(a), 0.7 * math.sin(a)) for a in np.linspace(3 * math.pi / 2, math.pi / 2, 20)]
    return [("body", outer + inner)]


def _umbrella():
    canopy = [(0.95 * math.cos(a), 0.95 * math.sin(a) * 0.8 - 0.05) for a in np.linspace(math.pi, 2 * math.pi, 20)]
    return [
        (DARK, _rect(-0.05, -0.1, 0.05, 0.75)),
        (DARK, [(-0.05, 0.7), (0.05, 0.7), (0.3, 0.9), (0.25, 0.95)]),
        ("body", canopy),
    ]


def _flower():
    parts = [((40, 140, 50), _rect(-0.05, 0.2, 0.05, 0.98))]
    for i in range(6):
        a = i * math.pi / 3
        parts.append(("body", _circle(0.35 * math.cos(a), -0.25 + 0.35 * math.sin(a), 0.28, 12)))
    parts.append(((250, 210, 40), _circle(0.0, -0.25, 0.2, 12)))
    return parts


def _boat():
    return [
        ("body", [(-0.95, 0.3), (0.95, 0.3), (0.6, 0.75), (-0.6, 0.75)]),
        (DARK, _rect(-0.04, -0.9, 0.04, 0.3)),
        (LIGHT_DETAIL, [(0.08, -0.85), (0.08, 0.2), (0.7, 0.2)]),
    ]


def _bird(subclass: str):
    beak, tail, crest, stripes = BIRD_SUBCLASSES[subclass]
    parts = []
    tails = {
        "round": [(-0.45, -0.05), (-0.95, -0.2), (-1.0, 0.1), (-0.9, 0.3), (-0.45, 0.2)],
        "fork": [(-0.45, -0.05), (-1.0, -0.4), (-0.75, 0.05), (-1.0, 0.45), (-0.45, 0.2)],
        "up": [(-0.45, -0.05), (-0.85, -0.75), (-0.7, -0.8), (-0.35, 0.15)],
    }
    parts.append(("body", tails[tail]))
    parts.append(("body", [(0.7 * math.cos(t) - 0.05, 0.38 * math.sin(t) + 0.05) for t in np.linspace(0, 2 * math.pi, 28, endpoint=False)]))
    parts.append(("body", _circle(0.55, -0.3, 0.28, 18)))
    beaks = {
        "short": [(0.78, -0.38), (1.0, -0.3), (0.78, -0.22)],
        "long": [(0.78, -0.36), (1.22, -0.3), (0.78, -0.25)],
        "hook": [(0.78, -0.42), (1.0, -0.38), (1.02, -0.18), (0.92, -0.26), (0.78, -0.22)],
    }
    parts.append(((240, 170, 20), beaks[beak]))
    if crest:
        parts.append((DARK, [(0.4, -0.5), (0.3, -0.85), (0.55, -0.55), (0.6, -0.9), (0.68, -0.52)]))
    for s in range(stripes):
        x = -0.25 + 0.22 * s
        parts.append((DARK, [(x, -0.15), (x + 0.08, -0.15), (x + 0.2, 0.25), (x + 0.12, 0.25)]))
    parts.append((DARK, _circle(0.62, -0.34, 0.06, 8)))
    parts.append(((60, 60, 60), _rect(0.0, 0.4, 0.05, 0.75)))
    parts.append(((60, 60, 60), _rect(0.2, 0.4, 0.25, 0.75)))
    return parts


_SHAPES = {
    "star": _star,
    "heart": _heart,
    "house": _house,
    "tree": _tree,
    "fish": _fish,
    "car": _car,
    "moon": _moon,
    "umbrella": _umbrella,
    "flower": _flower,
    "boat": _boat,
}


def _shape(attrs: Attributes):
    return _bird(attrs.subclass) if attrs.kind == "bird" else _SHAPES[attrs.kind]()


def _draw_background(draw: ImageDraw.ImageDraw, name: str, size: int, rng: np.random.Generator) -> None:
    """Each background has a base colour and a seeded texture so it is recognisable at 64 px."""
    s = size
    u = lambda: float(rng.random())  # noqa: E731
    if name == "sky":
        for y in range(0, s, SUPERSAMPLE):
            t = y / s
            draw.rectangle([0, y, s, y + SUPERSAMPLE], fill=(int(110 + 80 * t), int(170 + 50 * t), 245))
        for _ in range(2):
            cx, cy, r = u() * s, u() * s * 0.7, s * (0.06 + 0.05 * u())
            for dx in (-1, 0, 1):
                draw.ellipse([cx + dx * r - r, cy - r * 0.7, cx + dx * r + r, cy + r * 0.7], fill=(250, 250, 252))
    elif name == "grass":
        draw.rectangle([0, 0, s, s], fill=(90, 175, 70))
        for _ in range(60):
            x, y = u() * s, u() * s
            draw.line([x, y, x + (u() - 0.5) * s * 0.03, y - s * 0.05], fill=(55, 130, 45), width=max(1, s // 128))
    elif name == "sea":
        draw.rectangle([0, 0, s, s], fill=(30, 110, 170))
        for k in range(7):
            y0 = (k + u() * 0.5) * s / 7
            pts = [(x, y0 + math.sin(x / s * 12 + k) * s * 0.015) for x in np.linspace(0, s, 24)]
            draw.line(pts, fill=(150, 205, 235), width=max(1, s // 64))
    elif name == "desert":
        draw.rectangle([0, 0, s, s], fill=(235, 205, 140))
        for k in range(3):
            y0 = s * (0.35 + 0.25 * k + 0.1 * u())
            pts = [(x, y0 + math.sin(x / s * 5 + u()) * s * 0.04) for x in np.linspace(0, s, 20)]
            draw.line(pts, fill=(200, 160, 95), width=max(1, s // 48))
    elif name == "night":
        draw.rectangle([0, 0, s, s], fill=(15, 20, 60))
        for _ in range(25):
            x, y, r = u() * s, u() * s, s * 0.008
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 200))
    elif name == "snow":
        draw.rectangle([0, 0, s, s], fill=(225, 232, 240))
        for _ in range(40):
            x, y, r = u() * s, u() * s, s * 0.01
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(170, 185, 210))
    elif name == "forest":
        draw.rectangle([0, 0, s, s], fill=(25, 80, 45))
        for _ in range(7):
            x, w = u() * s, s * (0.03 + 0.03 * u())
            draw.rectangle([x, 0, x + w, s], fill=(80, 55, 30))
    elif name == "indoor":
        draw.rectangle([0, 0, s, int(s * 0.7)], fill=(225, 200, 170))
        draw.rectangle([0, int(s * 0.7), s, s], fill=(150, 95, 55))
        for k in range(6):
            x = s * (k + 0.5) / 6
            draw.line([x, 0, x, s * 0.7], fill=(205, 178, 148), width=max(1, s // 64))
    else:
        raise UserError(f"unknown background {name!r}; expected one of {BACKGROUNDS}")


def render(attrs: Attributes, size: int = 64, seed: int = 0) -> Image.Image:
    """Draw the image for `attrs`; `seed` only moves the background's texture and small jitter."""
    return _draw(attrs, size, seed, with_mask=False)[0]


def _draw(attrs: Attributes, size: int, seed: int, with_mask: bool) -> tuple[Image.Image, np.ndarray | None]:
    if size % 8 or not 8 <= size <= 512:
        raise UserError(f"size must be a multiple of 8 between 8 and 512, got {size}")
    rng = np.random.default_rng([seed, 7])
    big = size * SUPERSAMPLE
    canvas = Image.new("RGB", (big, big))
    draw = ImageDraw.Draw(canvas)
    _draw_background(draw, attrs.background, big, rng)

    half = SCALES[attrs.scale] * big / 2
    row, col = divmod(POSITIONS.index(attrs.position), 3)
    margin = half * 1.02
    cx = margin + (big - 2 * margin) * col / 2 + (rng.random() - 0.5) * big * 0.03
    cy = margin + (big - 2 * margin) * row / 2 + (rng.random() - 0.5) * big * 0.03
    angle = math.radians(TILTS[attrs.tilt] + (rng.random() - 0.5) * 8)
    flip = -1.0 if attrs.facing == "left" else 1.0
    # Tilt is defined on the right-facing shape, then mirrored, so "tilted left" stays left.
    cos_a, sin_a = math.cos(angle), math.sin(angle)

    def place(points):
        out = []
        for x, y in points:
            x *= flip
            xr = x * cos_a - y * sin_a * flip
            yr = x * sin_a * flip + y * cos_a
            out.append((cx + xr * half, cy + yr * half))
        return out

    fill_rgb = COLORS[attrs.color]
    outline = DARK
    width = max(1, big // 64)
    mask = Image.new("L", (big, big)) if with_mask else None
    mask_draw = ImageDraw.Draw(mask) if mask is not None else None
    for fill, poly in _shape(attrs):
        rgb = fill_rgb if fill == "body" else fill
        draw.polygon(place(poly), fill=rgb, outline=outline, width=width)
        if mask_draw is not None:
            mask_draw.polygon(place(poly), fill=255, outline=255, width=width)
    coverage = None if mask is None else np.asarray(mask.resize((size, size), Image.BOX), dtype=np.float32) / 255
    return canvas.resize((size, size), Image.LANCZOS), coverage


def generate(seed: int, index: int, size: int = 64, with_mask: bool = False, **sample_kwargs) -> Sample:
    """Sample `index` of the world with global `seed`: attributes and image, deterministically.
    with_mask: also the object's coverage (H×W float32 in [0, 1], antialiased as the image is),
    what a background replacement keeps; the image is the same either way."""
    rng = np.random.default_rng([seed, index])
    attrs = sample_attributes(rng, **sample_kwargs)
    image, mask = _draw(attrs, size, int(rng.integers(2**31)), with_mask)
    return Sample(attrs, image, seed, index, mask)


def metadata_row(sample: Sample, file_name: str, style: str = "plain") -> dict:
    row = {"file_name": file_name, "seed": sample.seed, "index": sample.index, **asdict(sample.attributes)}
    row.update(style=style, caption=sample.attributes.caption, width=sample.image.width, height=sample.image.height)
    return row


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def _check_out_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder; choose a new --out folder")
    out.mkdir(parents=True, exist_ok=True)


def parse_kinds(text: str | None) -> tuple[str, ...]:
    if not text:
        return KINDS
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise UserError(f"unknown kind(s) {unknown}; choose from {', '.join(KINDS)}")
    return kinds


def write_images(out: Path, n: int, seed: int = 0, style: str = "plain", kinds: tuple[str, ...] = KINDS,
                 size: int = 64, run: Run | None = None) -> list[dict]:
    """Write n images as NNNNNN.png + NNNNNN.txt (caption) and a metadata.jsonl of attributes; run: progress per image."""
    from styles.reference import PLAIN, REFERENCE_STYLES, apply_style

    run = as_run(run)
    if style != PLAIN and style not in REFERENCE_STYLES:
        raise UserError(f"unknown style {style!r}; choose plain or one of: {', '.join(REFERENCE_STYLES)}")
    out = Path(out)
    _check_out_dir(out)
    rows = []
    for i in range(n):
        sample = generate(seed, i, size=size, kinds=kinds)
        name = f"{i:06d}"
        apply_style(style, sample.image, seed=seed * 1_000_003 + i).save(out / f"{name}.png", format="PNG")
        (out / f"{name}.txt").write_text(sample.attributes.caption + "\n")
        rows.append(metadata_row(sample, f"{name}.png", style))
        run.progress(i + 1, n)
    write_jsonl(out / "metadata.jsonl", rows)
    return rows


def write_style_folders(out: Path, n: int, seed: int = 0, kinds: tuple[str, ...] = KINDS, size: int = 64,
                        run: Run | None = None) -> list[dict]:
    """One folder per reference style with n images each (varied content, caption sidecars).

    This is the layout `studio ingest` reads; the attributes of every image go in
    out/metadata.jsonl with paths relative to out. run: progress(images written, n x styles)
    after every image.
    """
    from styles.reference import REFERENCE_STYLES, apply_style

    run = as_run(run)
    out = Path(out)
    _check_out_dir(out)
    rows = []
    total = n * len(REFERENCE_STYLES)
    for s, style in enumerate(REFERENCE_STYLES):
        folder = out / style
        folder.mkdir()
        for i in range(n):
            index = s * n + i
            sample = generate(seed, index, size=size, kinds=kinds)
            name = f"{i:06d}"
            apply_style(style, sample.image, seed=seed * 1_000_003 + index).save(folder / f"{name}.png", format="PNG")
            (folder / f"{name}.txt").write_text(sample.attributes.caption + "\n")
            rows.append(metadata_row(sample, f"{style}/{name}.png", style))
            run.progress(index + 1, total)
    write_jsonl(out / "metadata.jsonl", rows)
    return rows
