"""Reading and validating a style folder: images, optional caption sidecars, optional style.toml.

A style folder holds 3 to 50 images (png, jpg, webp; any size and mode), each optionally
with a `.txt` caption beside it, and optionally a `style.toml` with `name`, `token`,
`description`, `steps`. Every file that cannot be used is rejected with a reason; nothing
is learnt from junk. Images are EXIF-transposed, converted to RGB (16-bit scaled, CMYK
converted, alpha composited on white), resized on the short side and centre-cropped.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from generators.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MIN_IMAGES, MAX_IMAGES = 3, 50
MIN_SIDE = 16
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
IGNORED = {"style.toml", "metadata.jsonl", "readme.md", ".ds_store", "thumbs.db"}
MAX_CAPTION_BYTES = 4096  # a prompt holds 77 tokens; a longer caption file is cut to its first 4 KB


class UnusableStyle(UserError):
    """A style folder that cannot be learnt as a whole. str() is the full message; `reason` is the
    short why, `usable` the images that could be read and `rejected` the (file, reason) pairs, for plans."""

    def __init__(self, message: str, reason: str, usable: int | None = None, rejected=()):
        super().__init__(message)
        self.reason, self.usable, self.rejected = reason, usable, list(rejected)


@dataclass
class StyleImage:
    path: Path
    image: Image.Image  # RGB, resolution × resolution
    caption: str | None
    sha256: str  # of the file's bytes


@dataclass
class StyleFolder:
    name: str
    folder: Path
    images: list[StyleImage]
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason)
    token: str = ""
    description: str = ""
    steps: int | None = None

    @property
    def hashes(self) -> list[str]:
        return sorted(im.sha256 for im in self.images)


def check_style_name(name: str, where: str = "") -> str:
    if not NAME_PATTERN.match(name):
        raise UserError(
            f"style name {name!r}{where} must be 1-48 characters of lowercase letters, digits, '_' or '-', "
            "starting with a letter or digit (no spaces, dots or path characters); rename the folder or set name in style.toml"
        )
    return name


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB; alpha is composited on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(image, dtype=np.float64)
        hi = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
        image = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def open_rgb(path: Path) -> Image.Image:
    """Open, verify, decode in full (a truncated JPEG fails here, not only at verify) and normalize
    one image to RGB, EXIF-transposed; raises UserError with the reason if unusable."""
    try:
        with warnings.catch_warnings():
            # PIL warns above 89 megapixels and refuses above twice that: either way one file is rejected
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as probe:
                probe.verify()
            with Image.open(path) as im:
                im.load()
                im = ImageOps.exif_transpose(im)
                if min(im.size) < MIN_SIDE:
                    raise UserError(f"too small ({im.size[0]}×{im.size[1]} px; at least {MIN_SIDE} px on each side)")
                return _to_rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise UserError(f"too large to open safely ({type(err).__name__}: {str(err).splitlines()[0][:80]}); "
                        "downscale it") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise UserError(f"not a readable image ({type(err).__name__}: {str(err).splitlines()[0][:80]})") from None


def load_image(path: Path, resolution: int) -> Image.Image:
    """`open_rgb`, then centre-cropped and resized to resolution × resolution."""
    return ImageOps.fit(open_rgb(path), (resolution, resolution), Image.BICUBIC)


def read_caption(path: Path) -> tuple[str | None, str | None]:
    """(caption, note): the sidecar's text, at most MAX_CAPTION_BYTES of it (cut at a word), with a
    note saying so when the file is longer."""
    with open(path, "rb") as fh:
        data = fh.read(MAX_CAPTION_BYTES + 1)
    note = None
    if len(data) > MAX_CAPTION_BYTES:
        size = path.stat().st_size
        data = data[:MAX_CAPTION_BYTES]
        data = data[: data.rfind(b" ")] if b" " in data else data
        note = (f"caption file of {size / 1024:.0f} KB: only its first {MAX_CAPTION_BYTES // 1024} KB are used "
                "(a prompt holds 77 tokens)")
    return data.decode(errors="replace").strip() or None, note


def scan_images(folder: Path, resolution: int, what: str, skip_hidden: bool = False,
                ignored: frozenset = frozenset(IGNORED)) -> tuple[list[tuple[Path, Image.Image, str]], list[tuple[str, str]]]:
    """A flat folder of images, read as the museum and the GAN tasks read theirs: ([(path, image, sha256)]
    of the decodable, distinct images in name order, each through load_image; [(file, why)] of the rest:
    sub-folders, other file types, unreadable files, duplicates). Caption sidecars (.txt) and the `ignored`
    names are passed over silently (hidden files too with skip_hidden); `what` names the folder's kind."""
    found, rejected, seen = [], [], {}
    for path in sorted(Path(folder).iterdir()):
        if path.name.lower() in ignored or path.suffix.lower() == ".txt" or (skip_hidden and path.name.startswith(".")):
            continue
        if path.is_dir():
            rejected.append((path.name, f"a sub-folder ({what} folders are flat)"))
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            rejected.append((path.name, f"not an image file type ({', '.join(IMAGE_SUFFIXES)})"))
            continue
        try:
            image = load_image(path, resolution)
        except ValueError as err:
            rejected.append((path.name, str(err)))
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in seen:
            rejected.append((path.name, f"duplicate of {seen[digest]}"))
            continue
        seen[digest] = path.name
        found.append((path, image, digest))
    return found, rejected


def read_style_folder(folder: Path, resolution: int, name: str | None = None) -> StyleFolder:
    """Validate `folder` as one style. Raises UserError (UnusableStyle) if the style as a whole is unusable."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder of style images")
    settings = {}
    toml_path = folder / "style.toml"
    if toml_path.exists():
        try:
            settings = tomllib.loads(toml_path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{toml_path}: not valid TOML ({err}); fix or delete it") from None
        unknown = set(settings) - {"name", "token", "description", "steps"}
        if unknown:
            raise UserError(f"{toml_path}: unknown keys {sorted(unknown)}; allowed: name, token, description, steps")
    style_name = check_style_name(str(settings.get("name", name or folder.name)), f" (from {folder})")
    steps = settings.get("steps")
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise UserError(f"{toml_path}: steps must be a positive integer, got {steps!r}")

    images = []
    found, rejected = scan_images(folder, resolution, "style")
    for path, image, digest in found:
        sidecar = path.with_suffix(".txt")
        caption = None
        if sidecar.is_file():
            caption, note = read_caption(sidecar)
            if note:
                rejected.append((sidecar.name, note))
        images.append(StyleImage(path, image, caption, digest))
    if len(images) < MIN_IMAGES:
        reason = f"has {len(images)} usable images, needs at least {MIN_IMAGES}"
        detail = "; rejected: " + "; ".join(f"{f}: {r}" for f, r in rejected[:5]) if rejected else ""
        raise UnusableStyle(f"style {style_name!r} ({folder}) {reason}{detail}", reason, len(images), rejected)
    if len(images) > MAX_IMAGES:
        reason = f"has {len(images)} images; use at most {MAX_IMAGES}"
        raise UnusableStyle(f"style {style_name!r} ({folder}) {reason}", reason, len(images), rejected)
    return StyleFolder(
        name=style_name,
        folder=folder,
        images=images,
        rejected=rejected,
        token=str(settings.get("token", f"<{style_name}>")),
        description=str(settings.get("description", "")),
        steps=steps,
    )
