"""Tests for styles.reference: every reference style through shared checkers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image, ImageDraw

from styles.reference import (
    COLOR_PRESERVING,
    PLAIN,
    REFERENCE_STYLES,
    apply_style,
    describe_style,
)

# Minimum mean absolute difference (0-255 scale) between a style and the
# input, and between any two styles on the same input.
MIN_DIFF_FROM_INPUT = 10.0
MIN_DIFF_BETWEEN_STYLES = 8.0


def make_image(size: int = 64) -> Image.Image:
    """A red triangle with a black outline on a light-blue background."""
    k = size / 64
    im = Image.new("RGB", (size, size), (173, 216, 230))
    d = ImageDraw.Draw(im)
    d.polygon([(12 * k, 50 * k), (32 * k, 10 * k), (52 * k, 50 * k)],
              fill=(220, 30, 30), outline=(0, 0, 0), width=max(1, round(k)))
    return im


def make_night_image(size: int = 64) -> Image.Image:
    """A yellow disc on a dark-blue background (a dark scene)."""
    k = size / 64
    im = Image.new("RGB", (size, size), (15, 20, 60))
    ImageDraw.Draw(im).ellipse([18 * k, 18 * k, 46 * k, 46 * k], fill=(250, 220, 40))
    return im


def mad(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


# ---------------------------------------------------------------- checkers

def check_rgb_same_size(name: str, size: int) -> None:
    src = make_image(size)
    out = apply_style(name, src, seed=0)
    assert isinstance(out, Image.Image)
    assert out.mode == "RGB"
    assert out.size == src.size


def check_deterministic(name: str) -> None:
    src = make_image()
    a = apply_style(name, src, seed=7).tobytes()
    b = apply_style(name, src.copy(), seed=7).tobytes()
    assert a == b


def check_input_untouched(name: str) -> None:
    src = make_image()
    before = src.tobytes()
    apply_style(name, src, seed=3)
    assert src.tobytes() == before


def check_differs_from_input(name: str) -> None:
    for make in (make_image, make_night_image):
        src = make()
        d = mad(apply_style(name, src, seed=0), src)
        assert d > MIN_DIFF_FROM_INPUT, f"{name} too close to input ({d:.1f})"


CHECKERS = {
    "rgb_same_size_64": lambda n: check_rgb_same_size(n, 64),
    "rgb_same_size_128": lambda n: check_rgb_same_size(n, 128),
    "deterministic": check_deterministic,
    "input_untouched": check_input_untouched,
    "differs_from_input": check_differs_from_input,
}

CASES = [(style, check) for style in REFERENCE_STYLES for check in CHECKERS]


@pytest.mark.parametrize("style,check", CASES, ids=[f"{s}-{c}" for s, c in CASES])
def test_style_case(style: str, check: str) -> None:
    CHECKERS[check](style)


# ------------------------------------------------------------- cross-style

@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Image.Image]]:
    srcs = [make_image(), make_night_image()]
    return {n: [apply_style(n, s, seed=0) for s in srcs] for n in REFERENCE_STYLES}


@pytest.mark.parametrize("a,b", list(itertools.combinations(REFERENCE_STYLES, 2)))
def test_styles_pairwise_distinct(rendered, a: str, b: str) -> None:
    for ia, ib in zip(rendered[a], rendered[b]):
        d = mad(ia, ib)
        assert d > MIN_DIFF_BETWEEN_STYLES, f"{a} vs {b} too similar ({d:.1f})"


# -------------------------------------------------------------------- API

def test_registry_shape() -> None:
    assert len(REFERENCE_STYLES) >= 10
    assert len(set(REFERENCE_STYLES)) == len(REFERENCE_STYLES)
    assert PLAIN == "plain" and PLAIN not in REFERENCE_STYLES
    assert COLOR_PRESERVING <= set(REFERENCE_STYLES)
    for n in ("sepia", "pencil_sketch", "crosshatch", "neon_glow"):
        assert n not in COLOR_PRESERVING


def test_plain_returns_copy() -> None:
    src = make_image()
    out = apply_style(PLAIN, src)
    assert out is not src
    assert out.tobytes() == src.tobytes()


def test_unknown_name_raises() -> None:
    with pytest.raises(ValueError) as exc:
        apply_style("no_such_style", make_image())
    assert "pixel_art" in str(exc.value)
    with pytest.raises(ValueError):
        describe_style("no_such_style")


@pytest.mark.parametrize("name", (PLAIN,) + REFERENCE_STYLES)
def test_describe_style(name: str) -> None:
    text = describe_style(name)
    assert isinstance(text, str) and text and "\n" not in text


@pytest.mark.parametrize("name", REFERENCE_STYLES)
def test_odd_sizes_and_modes(name: str) -> None:
    for size in ((8, 8), (16, 40), (72, 72)):
        out = apply_style(name, make_image(64).resize(size), seed=1)
        assert out.size == size and out.mode == "RGB"
    out = apply_style(name, make_image(32).convert("RGBA"), seed=1)
    assert out.mode == "RGB" and out.size == (32, 32)
