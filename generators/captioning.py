"""Captions the museum makes itself, for style images that come without a caption file.

Why: a style learnt from "a picture <token>" alone puts the images' content into the token and
the LoRA, so a new content prompt with the token does not take the style (issue 34: token
separation 0.01 on five caption-free folders). With the content said in words, the token only
has to carry what the words do not: the style. This is kohya's and OneTrainer's auto-captioning
(BLIP, WD14) done at ingestion.

`MuseumConfig.captioner` names one:
- "auto": "mini-world" on a base that Studio pretrained on the mini world (its folder holds the
  `training_options.json` that `studio pretrain base` writes), "none" on any other;
- "mini-world": the committed evaluator reads kind, background, size, facing, tilt and position,
  and the caption says them in the mini world's words. Colour is left out, since a style owns its
  palette (the evaluator reads an object's colour right on 0.57 of styled images), and so is
  every attribute read with less than `min_confidence`;
- "none": captionless images train as "a picture";
- anything else: a local folder or hub id of a transformers image-to-text model that captions
  without a prompt (BLIP, GIT), loaded from safetensors only.
A caption file beside an image always wins; made captions are recorded in the style's manifest.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from generators.errors import UserError

PRETRAINED_MARKER = "training_options.json"  # written by `studio pretrain base` into its pipeline folder
MINI_WORLD_HEADS = ("kind", "background", "scale", "facing", "tilt", "position")


def resolve(name: str, base) -> str:
    """The captioner `name` stands for with this base ("auto" becomes "mini-world" or "none")."""
    if name != "auto":
        return name
    from generators.base_source import base_path

    folder = Path(base_path(base))
    return "mini-world" if (folder / PRETRAINED_MARKER).is_file() else "none"


class MiniWorldCaptioner:
    """Mini-world captions from the committed evaluator's heads, e.g.
    "a fish on the sea background, small, facing left, at the top right"."""

    def __init__(self, evaluator=None, min_confidence: float = 0.8):
        from generators.evaluators import load_evaluator

        self.evaluator = evaluator if evaluator is not None else load_evaluator(device="cpu")
        self.min_confidence = min_confidence

    def __call__(self, images: list[Image.Image]) -> list[str]:
        probs = self.evaluator.probabilities(images)
        labels = self.evaluator.labels
        read = {}
        for head in MINI_WORLD_HEADS:
            p, idx = probs[head].max(-1)
            read[head] = [labels[head][i] if c >= self.min_confidence else None for c, i in zip(p.tolist(), idx.tolist())]
        return [self._caption({h: read[h][i] for h in MINI_WORLD_HEADS}) for i in range(len(images))]

    @staticmethod
    def _caption(a: dict) -> str:
        """The mini world's caption form (miniworld.Attributes.caption), without the colour word and
        without what was read unsure; the kind is always said ("picture" if unsure)."""
        text = f"a {a['kind'] or 'picture'}"
        if a["background"]:
            text += f" on the {a['background']} background"
        parts = [a["scale"], a["facing"] and f"facing {a['facing']}", a["tilt"] if a["tilt"] != "upright" else None]
        if a["position"]:
            parts.append("in the center" if a["position"] == "center" else f"at the {a['position']}")
        return ", ".join([text] + [p for p in parts if p])


def load_image_text_model(model_id: str, device: str, alternatives: str):
    """(processor, model) of a transformers image-text-to-text model (BLIP, GIT, chat VLMs) from a
    local folder or a cached hub id, in eval mode on `device`. Weights load from safetensors only:
    a folder that holds only pickled weights is refused. alternatives: what the error suggests instead."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(model_id)
        model = AutoModelForImageTextToText.from_pretrained(model_id, use_safetensors=True)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise UserError(f"captioner {model_id!r} could not be loaded as a transformers image-text model with "
                        f"safetensors weights ({first}); give a local folder or a cached hub id, or use {alternatives}") from None
    return processor, model.to(device).eval()


class TransformersCaptioner:
    """A transformers image-to-text model (BLIP, GIT) from a folder or hub id, safetensors only."""

    def __init__(self, model: str, device: str = "cpu", max_new_tokens: int = 30, batch_size: int = 8):
        self.processor, self.model = load_image_text_model(
            model, device, "the captioner 'mini-world' or 'none'")
        self.device, self.max_new_tokens, self.batch_size = device, max_new_tokens, batch_size

    @torch.no_grad()
    def __call__(self, images: list[Image.Image]) -> list[str]:
        out = []
        for i in range(0, len(images), self.batch_size):
            inputs = self.processor(images=images[i : i + self.batch_size], return_tensors="pt").to(self.device)
            ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens)
            out += [text.strip() for text in self.processor.batch_decode(ids, skip_special_tokens=True)]
        return out


def load_captioner(name: str, base, device: str = "cpu", evaluator=None):
    """The captioner `name` (MuseumConfig.captioner) stands for on `base`; None for "none"."""
    name = resolve(name, base)
    if name == "none":
        return None
    if name == "mini-world":
        return MiniWorldCaptioner(evaluator)
    return TransformersCaptioner(name, device)


def style_words(images: list[Image.Image], base, tokenizer, min_share: float = 0.5) -> tuple[str, ...]:
    """Words for a style in the base's own style vocabulary, to start its token from (textual
    inversion's initializer words, chosen from the images): on a base Studio pretrained with the
    style family (studio-mini 2, whose tokenizer holds the family's words as single tokens), the
    family head reads which components each image carries, and the words of those found on at least
    `min_share` of the images come back, e.g. ("pixelated", "high", "contrast") for pixel art.
    Elsewhere, or when none is that common: ()."""
    if resolve("auto", base) != "mini-world":
        return ()
    from generators.sd_mini import family_head, style_family

    if any(len(tokenizer(w, add_special_tokens=False).input_ids) != 1 for w in style_family.words()):
        return ()  # a mini-world base from before the style family (the first studio-mini)
    predicted = family_head.load().predict(images)
    counts: dict[str, int] = {}
    for i in range(len(images)):
        for name in family_head.components_found(predicted, i):
            counts[name] = counts.get(name, 0) + 1
    common = [c for c in style_family.COMPONENT_NAMES if counts.get(c, 0) >= min_share * len(images)]
    return tuple(w for c in common for w in c.split())


def fill_captions(captions: list[str | None], images: list[Image.Image], name: str, base, device: str = "cpu",
                  evaluator=None) -> list[str | None]:
    """`captions` with every missing one made by the captioner `name` (given captions are kept;
    with "none", or nothing missing, they come back as they are)."""
    missing = [i for i, c in enumerate(captions) if not c]
    if not missing:
        return list(captions)
    captioner = load_captioner(name, base, device, evaluator)
    if captioner is None:
        return list(captions)
    made = captioner([images[i] for i in missing])
    out = list(captions)
    for i, text in zip(missing, made):
        out[i] = text or None
    return out
