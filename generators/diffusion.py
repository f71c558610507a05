"""Loading text-to-image bases and sampling them with reproducible, self-describing outputs.

A base is a diffusers StableDiffusionPipeline (SD 1.x/2.x) or StableDiffusionXLPipeline (SDXL):
the embedded studio-mini (default), a local pipeline folder, a single-file checkpoint with its
config folder, or a hub id resolved through the normal from_pretrained cache (HF_HUB_OFFLINE is
honoured). All of Studio goes through `load_base`; generators/bases.py holds what differs by family.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image, PngImagePlugin

from generators.base_source import DEFAULT_BASE, base_source
from generators.errors import UserError

ASSETS = DEFAULT_BASE.parent
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


def base_name(base: str | Path | None) -> str:
    """A stable name for a base: 'studio-mini' for the embedded one, else the path or hub id."""
    if base is None or Path(base).resolve() == DEFAULT_BASE.resolve():
        return "studio-mini"
    return str(base)


def load_base(base: str | Path | None = None, device: str = "auto", precision: str = "fp32"):
    """The base's pipeline (its family's class) from the embedded default, a local folder, a single
    .safetensors file or a hub id."""
    source = DEFAULT_BASE if base is None else base
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
    path = DEFAULT_BASE if base is None else Path(base)
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
    base: str = "studio-mini"
    scheduler: str = ""
    styles: tuple[str, ...] = ()


@torch.no_grad()
def generate(pipe, settings: list[GenerationSettings], batch_size: int = 8, callback=None,
             on_step=None) -> list[Image.Image]:
    """Images for a list of settings (same steps/guidance/size in a batch); each its own seed.

    callback(images_done, n_images) after each batch; on_step(steps_done, total_steps) after each
    denoising step of every batch (a batch is one pipeline call, so that is the finest progress).

    Every image's noise comes from its own torch.Generator(seed) on the CPU, so an image
    depends on its seed and settings only, not on the batch it was drawn in (up to float
    rounding) nor on the device.
    """
    out: list[Image.Image] = []
    chunks = [settings[start : start + batch_size] for start in range(0, len(settings), batch_size)]
    total_steps = sum(chunk[0].steps for chunk in chunks)
    done = [0]

    def step_end(_pipe, _i, _t, kwargs):
        done[0] += 1
        on_step(done[0], total_steps)
        return kwargs

    for chunk in chunks:
        first = chunk[0]
        extra = {"callback_on_step_end": step_end} if on_step else {}
        images = pipe(
            prompt=[s.prompt for s in chunk],
            negative_prompt=[s.negative_prompt for s in chunk],
            num_inference_steps=first.steps,
            guidance_scale=first.guidance,
            height=first.height,
            width=first.width,
            generator=[torch.Generator("cpu").manual_seed(s.seed) for s in chunk],
            **extra,
        ).images
        out.extend(images)
        if callback:
            callback(len(out), len(settings))
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
