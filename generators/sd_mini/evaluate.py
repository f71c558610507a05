"""`studio eval base`: does a base draw what held-out prompts ask for?

Prompts are captions of attribute sets whose (kind, colour, background) triple never
appeared in pretraining (`miniworld.is_held_out`); the evaluators read back each image's
attributes and we report the fraction that match.
"""

from __future__ import annotations

import time

import numpy as np

from generators import diffusion, miniworld
from generators.errors import UserError
from generators.run import Run

SCORED = ("kind", "color", "background", "position", "scale", "facing")


def held_out_prompts(n: int, seed: int) -> list[miniworld.Attributes]:
    return [miniworld.sample_attributes(np.random.default_rng([seed, i, 99]), held_out=True) for i in range(n)]


PROMPT_FORMS = ("caption", "no-colour")


def prompt_for(attrs: miniworld.Attributes, form: str) -> str:
    """The prompt of one form: the full caption, or the caption without its colour word (the form the
    product's own prompts take: synthetic export, the web app's defaults)."""
    if form == "no-colour":
        return attrs.caption.replace(f"a {attrs.color} ", "a ", 1)
    return attrs.caption


def evaluate_base(pipe, evaluator, n: int = 200, seed: int = 0, steps: int = 25, guidance: float = 5.0,
                  base: str = "studio-mini-2", batch_size: int = 16, run: Run | None = None,
                  keep_images: list | None = None, prompt_form: str = "caption") -> dict:
    """Flat dict: <attribute>_accuracy for each scored attribute, plus the settings. With prompt_form
    "no-colour" the colour is not asked for, so it is not scored. run: diffusion.generate's (progress
    in denoising steps of all the samples)."""
    if prompt_form not in PROMPT_FORMS:
        raise UserError(f"prompt form must be one of {', '.join(PROMPT_FORMS)}, got {prompt_form!r}")
    start = time.time()
    attrs = held_out_prompts(n, seed)
    size = diffusion.base_resolution(pipe)
    settings = [
        diffusion.GenerationSettings(prompt=prompt_for(a, prompt_form), seed=seed * 100_000 + i, steps=steps, guidance=guidance,
                                     width=size, height=size, base=base)
        for i, a in enumerate(attrs)
    ]
    images = diffusion.generate(pipe, settings, batch_size=batch_size, run=run)
    if keep_images is not None:
        keep_images.extend(zip(images, settings))
    predicted = evaluator.predict(images)
    result = {f"{name}_accuracy": float(np.mean([p == getattr(a, name) for p, a in zip(predicted[name], attrs)]))
              for name in SCORED if not (name == "color" and prompt_form == "no-colour")}
    result.update(n=n, seed=seed, steps=steps, guidance=guidance, base=base, seconds=round(time.time() - start, 1),
                  prompts="held-out (kind, colour, background) triples", prompt_form=prompt_form)
    return result
