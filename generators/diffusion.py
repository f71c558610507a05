"""Loading text-to-image bases and sampling them with reproducible, self-describing outputs.

A base is a diffusers StableDiffusionPipeline (SD 1.x/2.x) or StableDiffusionXLPipeline (SDXL):
an embedded base by name (studio-mini-2, the default), a local pipeline folder, a single-file checkpoint with its
config folder, or a hub id resolved through the normal from_pretrained cache (HF_HUB_OFFLINE is
honoured). All of Studio goes through `load_base`; generators/bases.py holds what differs by family.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image, PngImagePlugin

from generators.base_source import DEFAULT_BASE, DEFAULT_NAME, EMBEDDED, base_name, base_path, base_source  # noqa: F401 (re-exported)
from generators.errors import UserError
from generators.run import Run, as_run

PROGRESS_EVERY_S = 0.25  # generate reports progress at most this often (the run seam: a few times a second)
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """auto -> the device accelerate picks for this process (cuda when there is one)."""
    if isinstance(device, torch.device):
        return device
    if device in ("auto", None):
        from accelerate import PartialState

        return PartialState().device
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no CUDA device; use --device cpu or auto")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"--device must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


def load_base(base: str | Path | None = None, device: str = "auto", precision: str = "fp32"):
    """The base's pipeline (its family's class) from an embedded base (None: the default), a local
    folder, a single .safetensors file or a hub id."""
    source = base_path(base)
    kind = base_source(source)  # before importing diffusers: a wrong path fails at once
    from diffusers.utils import logging as diffusers_logging

    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dev = resolve_device(device)
    dtype = PRECISIONS[precision]
    if dev.type == "cpu" and dtype == torch.float16:
        raise UserError("--precision fp16 needs a GPU; use fp32 or bf16 on the CPU")
    from generators.bases import load_pipeline

    kwargs = dict(dtype=dtype, safety_checker=None, requires_safety_checker=False)
    if kind in ("folder", "file"):  # the family (SD 1.x/2.x, SDXL) decides the pipeline class
        pipe = load_pipeline(source, kind, **kwargs)
    else:
        try:
            pipe = load_pipeline(
                source, kind, local_files_only=os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", ""), **kwargs
            )
        except (OSError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise FileNotFoundError(f"could not load base {source!r} from the hub or its cache: {first}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(dev)


def base_resolution(pipe) -> int:
    return int(pipe.unet.config.sample_size * pipe.vae_scale_factor)


def resolution_of(base: str | Path | None) -> int:
    """The native resolution of a base, from its configs (no weights loaded for local folders)."""
    path = Path(base_path(base))
    if path.is_file():  # a single-file checkpoint: its config folder says
        from generators.bases import single_file_config

        path = single_file_config(path)
    if (path / "unet" / "config.json").is_file() and (path / "vae" / "config.json").is_file():
        unet = json.loads((path / "unet" / "config.json").read_text())
        vae = json.loads((path / "vae" / "config.json").read_text())
        return int(unet["sample_size"] * 2 ** (len(vae["block_out_channels"]) - 1))
    return base_resolution(load_base(base, "cpu"))


@dataclass
class GenerationSettings:
    prompt: str
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 25
    guidance: float = 5.0
    width: int = 64
    height: int = 64
    base: str = DEFAULT_NAME
    scheduler: str = ""
    styles: tuple[str, ...] = ()


class GeneratedImages(list):
    """The images `generate` returns: a plain list of PIL images, marked `stopped` when the run's
    should_stop cut the call short (the job board reads `.stopped`)."""

    stopped: bool = False


@torch.no_grad()
def generate(pipe, settings: list[GenerationSettings], batch_size: int = 8, run: Run | None = None) -> GeneratedImages:
    """Images for a list of settings (same steps/guidance/size in a batch); each its own seed.

    Settings are drawn in batches of `batch_size`, one pipeline call each. Every image's noise comes
    from its own torch.Generator(seed) on the CPU, so an image depends on its seed and settings
    only, not on the batch it was drawn in (up to float rounding) nor on the device, nor on `run`.

    The run seam (generators/run.py), all optional:
    - run.progress(done, total, images_done=k): the unit is one denoising step of one batch, so
      total = the sum of every batch's steps (fixed for the call) and the bar moves smoothly; it is
      reported at the start (0), at most about four times a second, and after every batch, so
      done == total when the call finishes (a stopped call leaves it where it was, below total).
    - run.should_stop(): polled before every batch and after every denoising step. When it turns
      true mid-batch the pipeline is interrupted the way diffusers supports (`pipe._interrupt` from
      `callback_on_step_end`: the remaining steps are skipped) and that batch's images are dropped.
      A stopped call returns the images of the batches that finished, i.e. the images of the first
      len(result) settings (a whole number of batches, possibly none), exactly as an unstopped call
      would have drawn them, with result.stopped = True; it raises nothing. A stop that comes on a
      batch's last step keeps that batch (it is finished).
    - run.preview(done, images, captions): each finished batch's images with their prompts as
      captions, as it finishes (a front shows or saves them while the rest are drawn).
    """
    run = as_run(run)
    out = GeneratedImages()
    chunks = [settings[start : start + batch_size] for start in range(0, len(settings), batch_size)]
    total = sum(chunk[0].steps for chunk in chunks)
    state = {"base": 0, "steps": 1, "reported": None, "at": 0.0, "interrupted": False}

    def report(done: int, force: bool = False) -> None:
        now = time.monotonic()
        if done == state["reported"] or not (force or now - state["at"] >= PROGRESS_EVERY_S):
            return
        state["reported"], state["at"] = done, now
        run.progress(done, total, images_done=len(out))

    def step_end(pipeline, i, _t, kwargs):
        # A scheduler may take more timesteps than steps (Heun: 2 per step): count in steps.
        n = max(1, int(getattr(pipeline, "num_timesteps", 0) or state["steps"]))
        if i + 1 >= n:  # the batch's last step: it is reported, with its images, once decoded
            return kwargs
        if run.should_stop():
            pipeline._interrupt = True  # diffusers skips the remaining steps of this call
            state["interrupted"] = True
        else:
            report(state["base"] + (i + 1) * state["steps"] // n)
        return kwargs

    if total:
        report(0, force=True)
    for chunk in chunks:
        if run.should_stop():
            break
        first = chunk[0]
        state["steps"], state["interrupted"] = first.steps, False
        images = pipe(
            prompt=[s.prompt for s in chunk],
            negative_prompt=[s.negative_prompt for s in chunk],
            num_inference_steps=first.steps,
            guidance_scale=first.guidance,
            height=first.height,
            width=first.width,
            generator=[torch.Generator("cpu").manual_seed(s.seed) for s in chunk],
            callback_on_step_end=step_end,
        ).images
        if state["interrupted"]:  # half-denoised: not an image of these settings
            break
        out.extend(images)
        state["base"] += first.steps
        report(state["base"], force=True)
        run.preview(state["base"], list(images), [s.prompt for s in chunk])
    out.stopped = len(out) < len(settings)
    return out


def save_with_settings(image: Image.Image, settings: GenerationSettings, path: Path) -> None:
    """PNG whose text chunks hold the settings, plus the same settings as a JSON sidecar."""
    meta = asdict(settings)
    meta["styles"] = list(settings.styles)
    info = PngImagePlugin.PngInfo()
    for key, value in meta.items():
        info.add_text(key, json.dumps(value) if not isinstance(value, str) else value)
    info.add_text("studio", json.dumps(meta, sort_keys=True))
    path = Path(path)
    image.save(path, format="PNG", pnginfo=info)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def read_settings(path: Path) -> GenerationSettings:
    """The settings embedded in a PNG written by `save_with_settings` ('reuse settings')."""
    with Image.open(path) as im:
        text = im.text.get("studio") if hasattr(im, "text") else None
    if not text:
        raise UserError(f"{path} carries no Studio settings (not written by studio generate)")
    meta = json.loads(text)
    meta["styles"] = tuple(meta.get("styles", ()))
    return GenerationSettings(**meta)
