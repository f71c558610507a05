"""Class-agnostic attributes of real images, and the caption bank they form.

Input: a folder of class folders (``DIR/<class>/<image>``), a few real images each. For every
real image an extractor gives a :class:`Context` (background, pose) as short phrases; the
bank is one :class:`BankEntry` per real image, saved as ``bank.jsonl`` (one JSON object a
line: ``file``, ``class_name``, ``background``, ``pose``, ``source``). The bank is meant
to be read and edited by hand; :func:`load_bank` validates an edited file line by line.

Extractors (one small interface, :class:`Extractor`):

* ``sidecar``: what the user wrote. ``DIR/attributes.jsonl`` (lines ``{"file":
  "<class>/<image>", "background": ..., "pose": ...}``) or a ``.txt`` beside the image
  holding ``background: ...`` and ``pose: ...`` lines. A mini-world caption ("a red fish on
  the sea background, small, facing left, at the top right") is read too: the words after
  "on the ... background," are the pose. Images without a sidecar are left to the next one.
* ``miniworld``: the built-in evaluators predict background, position, scale, facing and
  tilt; the phrases are those of the mini world's captions. Meaningful on mini-world-like
  pictures only (it always answers, whatever the picture).
* ``captioner``: a vision-language model loaded through transformers
  (``AutoProcessor`` + ``AutoModelForImageTextToText``) from a local folder or hub id. It is
  asked two questions that name the super-category only, never the class.

``auto`` (the default): sidecars where there are, the captioner for the rest when one is
given, else the mini-world evaluators.
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from generators.errors import UserError
from generators.files import atomic_write_text
from styles.folder import IMAGE_SUFFIXES, load_image

BANK_FILE = "bank.jsonl"
BANK_STAMP = ".bank.sha256"  # sha256 of the bank as Studio last wrote it (to tell a hand edit)
ATTRIBUTES_FILE = "attributes.jsonl"
EXTRACTORS = ("auto", "sidecar", "miniworld", "captioner")
CLASS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+-]{0,63}$")
MAX_PHRASE_WORDS = 16


@dataclass(frozen=True)
class Context:
    background: str
    pose: str


@dataclass(frozen=True)
class BankEntry:
    file: str  # "<class>/<image>", relative to the data folder
    class_name: str
    background: str
    pose: str
    source: str  # which extractor: sidecar, miniworld, captioner:<id>, or "edited"

    @property
    def context(self) -> Context:
        return Context(self.background, self.pose)


@dataclass
class RealImage:
    file: str  # "<class>/<image>"
    class_name: str
    path: Path
    image: Image.Image  # RGB, resolution x resolution (styles.folder.load_image)


def class_words(class_name: str) -> str:
    """How a class enters the prompt: its folder name as plain words ('flat_outline' -> 'flat outline')."""
    return re.sub(r"\s+", " ", re.sub(r"[_\-.+]", " ", class_name)).strip()


def read_class_folders(root: Path, resolution: int = 64) -> tuple[list[str], list[RealImage], list[tuple[str, str]]]:
    """Classes (sorted folder names), their usable images and the rejected files with reasons.

    Raises UserError when the folder holds no class folders or a class has no usable image.
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder; pass a folder of class folders (DIR/<class>/<image>)")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise UserError(f"{root} holds no class folders; put each class's images in DIR/<class>/")
    classes, images, rejected = [], [], []
    for folder in class_dirs:
        if not CLASS_NAME.match(folder.name):
            raise UserError(f"class folder name {folder.name!r} in {root}: use letters, digits, space, '_', '-', '.', '+' "
                            "(at most 64 characters, starting with a letter or digit); rename the folder")
        count = 0
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or path.is_dir():
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue  # sidecars, notes
            rel = f"{folder.name}/{path.name}"
            try:
                image = load_image(path, resolution)
            except ValueError as err:
                rejected.append((rel, str(err)))
                continue
            images.append(RealImage(rel, folder.name, path, image))
            count += 1
        if count == 0:
            raise UserError(f"class folder {folder} has no usable image ({', '.join(IMAGE_SUFFIXES)}); add a few or remove the folder")
        classes.append(folder.name)
    return classes, images, rejected


def _clean(phrase: str) -> str:
    phrase = " ".join(str(phrase).replace("\n", " ").split()).strip(" .;:")
    words = phrase.split(" ")
    return " ".join(words[:MAX_PHRASE_WORDS])


# --- the interface -------------------------------------------------------------------------


class Extractor(ABC):
    """Gives a (background, pose) per real image, knowing the super-category only."""

    name = "extractor"

    @abstractmethod
    def extract(self, items: list[RealImage], category: str) -> list[Context | None]:
        """One Context per item; None where this extractor has no answer."""

    def source(self) -> str:
        return self.name


class SidecarExtractor(Extractor):
    """User-given attributes: DIR/attributes.jsonl or a .txt beside each image."""

    name = "sidecar"
    _CAPTION = re.compile(r"\bon the (?P<background>.+?) background(?:,\s*(?P<pose>.+))?$")

    def __init__(self, root: Path):
        self.root = Path(root)
        self.table: dict[str, Context] = {}
        jsonl = self.root / ATTRIBUTES_FILE
        if jsonl.is_file():
            for n, line in enumerate(jsonl.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    self.table[str(row["file"])] = Context(_clean(row["background"]), _clean(row["pose"]))
                except (json.JSONDecodeError, KeyError, TypeError) as err:
                    raise UserError(f"{jsonl} line {n}: expected {{\"file\": \"<class>/<image>\", \"background\": ..., "
                                    f"\"pose\": ...}} ({type(err).__name__}); fix the line") from None

    @classmethod
    def parse_txt(cls, text: str, path: Path) -> Context:
        fields = {}
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() in ("background", "pose"):
                fields[key.strip().lower()] = _clean(value)
        if "background" in fields or "pose" in fields:
            return Context(fields.get("background", ""), fields.get("pose", ""))
        match = cls._CAPTION.search(" ".join(text.split()))
        if match:
            return Context(_clean(match["background"]), _clean(match["pose"] or ""))
        raise UserError(f"{path}: write 'background: <phrase>' and 'pose: <phrase>' lines "
                        "(or a caption '... on the <background> background, <pose>')")

    def extract(self, items, category):
        out = []
        for item in items:
            if item.file in self.table:
                out.append(self.table[item.file])
                continue
            txt = item.path.with_suffix(".txt")
            out.append(self.parse_txt(txt.read_text(errors="replace"), txt) if txt.is_file() else None)
        return out


def miniworld_pose(position: str, scale: str, facing: str, tilt: str) -> str:
    """The pose phrase of a mini-world caption: 'small, facing left, tilted right, at the top right'."""
    tilt_part = "" if tilt == "upright" else f", {tilt}"
    where = "in the center" if position == "center" else f"at the {position}"
    return f"{scale}, facing {facing}{tilt_part}, {where}"


class MiniWorldExtractor(Extractor):
    """The built-in evaluators: background and pose as mini-world phrases."""

    name = "miniworld"

    def __init__(self, evaluator_folder: Path | None = None, device: str = "cpu"):
        from generators.evaluators import load_evaluator

        self.evaluator = load_evaluator(evaluator_folder, device=device if device != "auto" else "cpu")

    def extract(self, items, category):
        if not items:
            return []
        pred = self.evaluator.predict([item.image for item in items])
        return [Context(pred["background"][i], miniworld_pose(pred["position"][i], pred["scale"][i],
                                                              pred["facing"][i], pred["tilt"][i]))
                for i in range(len(items))]


class CaptionerExtractor(Extractor):
    """A vision-language model (transformers) asked about the super-category only."""

    name = "captioner"
    QUESTIONS = {
        "background": "In a few words, describe the background behind the {category} in this image.",
        "pose": "In a few words, describe the pose and position of the {category} in this image.",
    }
    # For captioning models without a chat template (BLIP, GIT): a prefix to complete.
    PREFIXES = {"background": "the background behind the {category} is", "pose": "the {category} is"}

    def __init__(self, model_id: str, device: str = "cpu", max_new_tokens: int = 24, image_size: int = 384):
        import torch

        from generators.captioning import load_image_text_model

        self.model_id = str(model_id)
        self.max_new_tokens = max_new_tokens
        self.image_size = image_size
        dev = device
        if device == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(dev)
        self.processor, self.model = load_image_text_model(
            self.model_id, self.device, "sidecars (DIR/attributes.jsonl or a .txt per image) or the built-in "
            "mini-world extractor (--extractor miniworld)")

    def source(self) -> str:
        return f"captioner:{self.model_id}"

    def _ask(self, image: Image.Image, question: str, prefix: str) -> str:
        import torch

        proc = self.processor
        if getattr(proc, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
            text = proc.apply_chat_template(messages, add_generation_prompt=True)
        else:
            text = prefix
        inputs = proc(images=[image], text=[text], return_tensors="pt").to(self.device)
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        ids, prompt_ids = out[0].tolist(), inputs["input_ids"][0].tolist()
        common = 0  # decoder-only models (and BLIP) echo the prompt: keep the new tokens only
        while common < min(len(ids), len(prompt_ids)) and ids[common] == prompt_ids[common]:
            common += 1
        tokenizer = getattr(proc, "tokenizer", proc)
        answer = tokenizer.decode(ids[common:], skip_special_tokens=True)
        return _clean(answer)

    def extract(self, items, category):
        out = []
        for item in items:
            with Image.open(item.path) as im:
                image = load_image(item.path, min(self.image_size, max(16, min(im.size))))
            answers = {key: self._ask(image, q.format(category=category), self.PREFIXES[key].format(category=category))
                       for key, q in self.QUESTIONS.items()}
            out.append(Context(answers["background"], answers["pose"]))
        return out


def make_extractors(kind: str, root: Path, captioner: str | None = None, device: str = "cpu") -> list[Extractor]:
    """The chain for --extractor: each later one fills the images the earlier ones left."""
    if kind not in EXTRACTORS:
        raise UserError(f"--extractor must be one of {', '.join(EXTRACTORS)}, got {kind!r}")
    if kind == "captioner" and not captioner:
        raise UserError("--extractor captioner needs --captioner ID_OR_PATH (a local folder or hub id of a vision-language model)")
    if kind == "sidecar":
        return [SidecarExtractor(root)]
    if kind == "miniworld":
        return [MiniWorldExtractor(device=device)]
    if kind == "captioner":
        return [CaptionerExtractor(captioner, device=device)]
    model = CaptionerExtractor(captioner, device=device) if captioner else None
    return [SidecarExtractor(root), model or _LazyMiniWorld(device)]


class _LazyMiniWorld(Extractor):
    """The mini-world extractor, loaded only if some image has no sidecar."""

    name = "miniworld"

    def __init__(self, device: str):
        self.device = device
        self.inner = None

    def extract(self, items, category):
        if not items:
            return []
        self.inner = self.inner or MiniWorldExtractor(device=self.device)
        return self.inner.extract(items, category)


def build_bank(items: list[RealImage], category: str, extractors: list[Extractor]) -> list[BankEntry]:
    """One entry per real image from the first extractor in the chain that answers."""
    found: dict[int, BankEntry] = {}
    for extractor in extractors:
        todo = [i for i in range(len(items)) if i not in found]
        if not todo:
            break
        answers = extractor.extract([items[i] for i in todo], category)
        for i, ctx in zip(todo, answers):
            if ctx is not None:
                found[i] = BankEntry(items[i].file, items[i].class_name, ctx.background, ctx.pose, extractor.source())
    missing = [items[i].file for i in range(len(items)) if i not in found]
    if missing:
        raise UserError(f"no attributes for {missing[0]} (and {len(missing) - 1} more); add sidecars "
                        f"(DIR/{ATTRIBUTES_FILE} or a .txt per image) or use --extractor auto|miniworld|captioner")
    return [found[i] for i in range(len(items))]


# --- the bank file ---------------------------------------------------------------------------


def bank_text(entries: list[BankEntry]) -> str:
    return "".join(json.dumps(asdict(e), ensure_ascii=False) + "\n" for e in entries)


def save_bank(path: Path, entries: list[BankEntry]) -> str:
    """Write the bank (atomically) and remember its hash, so a later hand edit can be told; returns the sha256."""
    path = Path(path)
    text = bank_text(entries)
    atomic_write_text(path, text)
    digest = hashlib.sha256(text.encode()).hexdigest()
    atomic_write_text(path.with_name(BANK_STAMP), digest + "\n")
    return digest


def bank_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def bank_was_edited(path: Path) -> bool:
    stamp = Path(path).with_name(BANK_STAMP)
    return not stamp.is_file() or stamp.read_text().strip() != bank_sha256(path)


def load_bank(path: Path, classes: list[str] | None = None) -> list[BankEntry]:
    """Read bank.jsonl (possibly hand-edited): every line needs file, class_name, background, pose."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no caption bank at {path}; run `studio synth fit` first")
    entries, seen = [], set()
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise TypeError("not an object")
            entry = BankEntry(str(row["file"]), str(row["class_name"]), _clean(row["background"]), _clean(row["pose"]),
                              str(row.get("source", "edited")))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise UserError(f"{path} line {n}: not a bank line ({type(err).__name__}: {err}); each line is "
                            '{"file": ..., "class_name": ..., "background": ..., "pose": ...}; fix it or delete the file to re-extract') from None
        if classes is not None and entry.class_name not in classes:
            raise UserError(f"{path} line {n}: class {entry.class_name!r} is not one of the fitted classes "
                            f"({', '.join(classes)}); fix the line")
        if entry.file in seen:
            raise UserError(f"{path} line {n}: {entry.file} appears twice; keep one line per real image")
        seen.add(entry.file)
        entries.append(entry)
    if not entries:
        raise UserError(f"{path} is empty; delete it to re-extract the bank")
    return entries
