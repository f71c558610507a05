"""The museum's operations: learn a style into a museum, sample from it, score it.

`learn` is one task: it loads the base, the earlier tokens and the shared LoRA, runs the task
(resumable from its checkpoint), scores the result and commits it to the museum in one atomic
index write. The fronts reach it through ingest.py (plan, then ingest), which decides each task's
config.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict

import numpy as np
import torch

from generators import bases, captioning, diffusion
from generators.errors import UserError
from generators.museum.config import MuseumConfig, check_shared_lora
from generators.museum.scores import SCORE_PROMPTS, score_text  # noqa: F401 - engine.SCORE_PROMPTS, engine.score_text
from generators.museum.train import learn_style, load_pipe_style_tokens, style_prompt
from generators.run import Run
from styles.folder import StyleFolder
from styles.museum import Museum


def token_vectors(museum: Museum, family: bases.Adapter | None = None) -> dict[str, list[torch.Tensor]]:
    """{token: [its vector in each text encoder]} of every style, read in the family's token layout."""
    family = family or bases.adapter(museum.family or "sd")
    return {s.token: family.token_vectors(museum.embedding(s.name), s.token) for s in museum.styles}


def earlier_styles(museum: Museum) -> list[dict]:
    """learn_style's earlier_styles: every style's token and captions (given and made), in order."""
    return [{"token": s.token, "captions": museum.manifest(s.name).get("captions", [])} for s in museum.styles]


def check_base(museum: Museum, pipe, state: dict[str, torch.Tensor] | None) -> None:
    """A museum refuses a base its shared LoRA was not learnt on (one line): another base family,
    or a UNet whose layers no longer have the shapes its shared LoRA `state` was learnt for (a
    base retrained under the same name with another architecture)."""
    have, built = bases.family_of_pipe(pipe), museum.family
    if built is not None and have != built:
        raise UserError(f"museum {museum.root} was built on an {bases.ADAPTERS[built].label} base ({museum.base!r}); "
                        f"this base is {bases.ADAPTERS[have].label}, and a museum keeps one base: use another --museum")
    museum.index.setdefault("family", have)
    misfit = lora_misfit(pipe.unet, state) if state is not None else None
    if misfit:
        raise UserError(f"museum {museum.root}'s shared LoRA does not fit the base loaded as {museum.base!r}: {misfit}; "
                        "the museum was learnt on another version of that base. Load the base it was built on "
                        "(--base PATH to a copy of it), or use another --museum")


def lora_misfit(unet, state: dict[str, torch.Tensor]) -> str | None:
    """The first LoRA matrix of `state` ("unet.<module>.lora_A[.<adapter>].weight": rank × in [× k × k],
    lora_B: out × rank) that `unet` has no layer for, or whose layer takes other widths; None if all
    fit. Other LoRA tensors (DoRA magnitudes, embedding LoRAs) are not read."""
    modules = dict(unet.named_modules())
    for key, tensor in state.items():
        if not key.startswith("unet.") or ".lora_" not in key:
            continue
        path, part = key[len("unet."):].rsplit(".lora_", 1)
        if part[:2] not in ("A.", "B."):
            continue
        layer = modules.get(path)
        if layer is None:
            return f"the base's UNet has no layer {path}"
        width_in = getattr(layer, "in_features", None) or getattr(layer, "in_channels", None)
        width_out = getattr(layer, "out_features", None) or getattr(layer, "out_channels", None)
        # lora_A is rank × in (× k × k), lora_B out × rank
        side, base_width, lora_width = ("input", width_in, tensor.shape[1]) if part[0] == "A" else ("output", width_out, tensor.shape[0])
        if base_width != lora_width:
            return f"layer {path} has {side} width {base_width} in the base and {lora_width} in the LoRA"
    return None


def load_museum_pipeline(museum: Museum, base=None, device: str = "auto", precision: str = "fp32",
                         lora: bool = True, fuse: bool = True):
    """The base with the museum's shared LoRA (lora=False: without it) and every token, loaded
    exactly as stock diffusers loads an export (load_lora_weights, load_textual_inversion)."""
    pipe = diffusion.load_base(base, device, precision)
    state = museum.lora_state()
    check_base(museum, pipe, state)
    family = bases.adapter(pipe)
    state = state if lora else None
    if state is not None:
        pipe.load_lora_weights({k: v.to(pipe.unet.dtype) for k, v in state.items()}, adapter_name="museum")
        if fuse:
            pipe.fuse_lora(adapter_names=["museum"])  # free at inference: the LoRA is in the weights
    for token, vectors in token_vectors(museum, family).items():
        family.load_token(pipe, token, vectors)  # load_textual_inversion into each encoder
    return pipe


def score_style(pipe, token: str, style_images, name: str, cfg: MuseumConfig, evaluator=None, seed: int = 0):
    """Sample the style on fixed content prompts; return (metrics, thumbnail).

    style_accuracy: the style evaluator's verdict (reference styles only). style_similarity:
    cosine between the evaluator features' mean of the samples and of the style images."""
    size = diffusion.base_resolution(pipe)
    settings = [diffusion.GenerationSettings(prompt=style_prompt(p, [token]), seed=seed + i, steps=cfg.sample_steps,
                                             guidance=cfg.guidance, width=size, height=size)
                for i, p in enumerate(SCORE_PROMPTS)]
    images = diffusion.generate(pipe, settings)
    metrics = {}
    if evaluator is not None:
        predicted = evaluator.predict(images)
        metrics["style_accuracy"] = float(np.mean([p == name for p in predicted["style"]])) if name in evaluator.labels["style"] else None
        fa = evaluator.features(images).mean(0)
        fb = evaluator.features(list(style_images)).mean(0)
        metrics["style_similarity"] = float(torch.nn.functional.cosine_similarity(fa, fb, dim=0))
        metrics["style_score"] = metrics["style_accuracy"] if metrics["style_accuracy"] is not None else metrics["style_similarity"]
    return metrics, images[0]


def learn(museum: Museum, style: StyleFolder, cfg: MuseumConfig, base=None, device: str = "auto",
          run: Run | None = None, evaluator=None) -> dict:
    """Learn `style` as the museum's next task with `cfg` (ingest.task_config's). Returns the
    manifest (with 'stopped' if run.should_stop() ended it; its checkpoint then resumes)."""
    if museum.has(style.name):
        raise FileExistsError(f"style {style.name!r} is already in museum {museum.root}")
    taken = {s.token for s in museum.styles}
    if style.token in taken:
        raise UserError(f"token {style.token!r} is already used by another style in {museum.root}; set another token in style.toml")
    if museum.n_tasks:
        # The guard for direct callers (library code reaching learn without ingest.task_config, which
        # adopts the museum's shared LoRA shape): the first task fixed the LoRA's shape and scale.
        first = MuseumConfig.from_dict(museum.manifest(museum.styles[0].name)["config"])
        check_shared_lora(first, {key: getattr(cfg, key) for key in MuseumConfig.SHARED_FIELDS}, museum.root)
    start = time.time()
    pipe = diffusion.load_base(base, device, "fp32")
    shared_lora = museum.lora_state()
    check_base(museum, pipe, shared_lora)
    family = bases.adapter(pipe)
    load_pipe_style_tokens(pipe, token_vectors(museum, family))
    earlier = earlier_styles(museum)
    museum.write_new()  # a new museum's museum.json comes before its first checkpoint
    work = museum.work_dir(style.name)
    if work.is_dir() and (not (work / "hashes.txt").is_file() or (work / "hashes.txt").read_text().split() != style.hashes):
        shutil.rmtree(work)  # an interrupted run on other images: start over
    work.mkdir(parents=True, exist_ok=True)
    (work / "hashes.txt").write_text("\n".join(style.hashes))
    images = [im.image for im in style.images]
    captions = captioning.fill_captions([im.caption for im in style.images], images, cfg.captioner, base,
                                        str(pipe.unet.device), evaluator)
    init_words = () if cfg.token_init or not cfg.token_init_from_images else captioning.style_words(images, base, pipe.tokenizer)
    lora, vector, result = learn_style(
        pipe, style.token, images, captions, cfg, shared_lora, earlier, checkpoint_dir=work, run=run,
        init_words=init_words,
    )
    manifest = {
        "name": style.name,
        "token": style.token,
        "description": style.description,
        "source": str(style.folder),
        "images": [{"file": im.path.name, "sha256": im.sha256, "caption": im.caption,
                    **({"made_caption": made} if made and not im.caption else {})}
                   for im, made in zip(style.images, captions)],
        "captioner": captioning.resolve(cfg.captioner, base),
        "token_init": list(cfg.token_init or init_words),  # the words the token started from (none: the vocabulary's mean)
        "captions": [c for c in captions if c],  # given and made: the feature term's replay prompts
        "rejected": [{"file": f, "reason": r} for f, r in style.rejected],
        "config": cfg.to_dict(),
        "base": museum.base,
        "result": asdict(result),
    }
    if result.stopped:
        manifest["stopped"] = True
        return manifest
    metrics, thumb = score_style(pipe, style.token, [im.image for im in style.images], style.name, cfg, evaluator)
    manifest["metrics"] = metrics
    manifest["timings"] = {"train_seconds": result.seconds, "total_seconds": round(time.time() - start, 1)}
    vectors = vector if isinstance(vector, list) else [vector]
    museum.commit_task(style.name, style.token, lora, {"rank": cfg.rank, "alpha": cfg.alpha, "base": museum.base},
                       family.token_file(style.token, vectors), manifest, thumb)
    return manifest
