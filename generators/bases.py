"""Base families: what differs between a Stable Diffusion 1.x/2.x base and an SDXL base.

Everything in Studio that touches a base's text side or calls its UNet directly (museum
training, synthetic fits, exports) goes through the family's adapter, so that adding a family
(SD3, Flux) means one more adapter here:

- `pipeline_class`: the diffusers pipeline that loads it;
- `text_encoders(pipe)`, `tokenizers(pipe)`: in the order the UNet's conditioning concatenates them;
- `encode(pipe, ids, resolution)`: how a prompt reaches the UNet, as keyword arguments of the UNet
  call (`cond`: a dict of batch-first tensors, indexable and concatenable like one tensor);
- `lora_target_modules`: the UNet attention projections the shared LoRA wraps;
- the token layout: how a learnt token's vectors (one per text encoder) are stored in a file.

The family of a base is recognised without loading weights: a pipeline folder by its
model_index.json's `_class_name`, a single .safetensors file by its tensor names (read from the
header only). No torch import at module level: the CLI's preflight uses `family_of`.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from generators.errors import UserError

SINGLE_FILE_SUFFIXES = (".safetensors",)
CONFIG_SUFFIX = ".config"  # model.safetensors reads its configs from model.config/ beside it
CONFIG_ENV = "STUDIO_BASE_CONFIG"  # or from the folder this names


class Adapter:
    family = ""
    label = ""
    pipeline_class_name = ""
    lora_target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    # Names of the encoders in a token file (None: the file is {token: vector}, one encoder).
    embedding_keys: tuple[str, ...] | None = None
    kohya_architecture = ""
    kohya_base_version = ""

    @property
    def pipeline_class(self):
        import diffusers

        return getattr(diffusers, self.pipeline_class_name)

    def text_encoders(self, pipe) -> list:
        raise NotImplementedError

    def tokenizers(self, pipe) -> list:
        raise NotImplementedError

    def text_pairs(self, pipe) -> list[tuple]:
        """(tokenizer, text encoder) of each encoder."""
        return list(zip(self.tokenizers(pipe), self.text_encoders(pipe)))

    def tokenize(self, pipe, texts: list[str], device=None) -> list:
        """Padded, truncated input ids, one tensor per tokenizer; a multi-vector token written out
        as its entries first, as the pipeline does when it samples."""
        from generators.diffusion_training import expand_tokens

        out = []
        for tok in self.tokenizers(pipe):
            ids = tok(expand_tokens(tok, list(texts)), padding="max_length", max_length=tok.model_max_length, truncation=True,
                      return_tensors="pt").input_ids
            out.append(ids.to(device) if device is not None else ids)
        return out

    def encode(self, pipe, ids: list, resolution: int) -> dict:
        raise NotImplementedError

    @staticmethod
    def unet(unet, zt, t, cond: dict):
        """The UNet's prediction for noisy latents `zt` at steps `t` under `cond` (from `encode`)."""
        added = {k: cond[k] for k in ("text_embeds", "time_ids") if k in cond}
        return unet(zt, t, encoder_hidden_states=cond["encoder_hidden_states"],
                    **({"added_cond_kwargs": added} if added else {})).sample

    # --- the token layout ----------------------------------------------------------------

    def token_file(self, token: str, vectors: list) -> dict:
        """A learnt token's vectors (one per encoder, each (n, D)) as a file's tensors."""
        if self.embedding_keys is None:
            return {token: vectors[0]}
        return {k: v.reshape(-1, v.shape[-1]) for k, v in zip(self.embedding_keys, vectors)}

    def token_vectors(self, tensors: dict, token: str) -> list:
        """The vectors (one per encoder) of `token` from a file written by `token_file` (or, for one
        encoder, any {token: vector} file)."""
        if self.embedding_keys is None:
            if token in tensors:
                return [tensors[token]]
            if len(tensors) == 1:
                return [next(iter(tensors.values()))]
            raise UserError(f"token file holds {sorted(tensors)}, not {token!r}")
        missing = [k for k in self.embedding_keys if k not in tensors]
        if missing:
            raise UserError(f"an {self.label} token file needs the keys {', '.join(self.embedding_keys)}; "
                            f"this one has {', '.join(sorted(tensors))}")
        return [tensors[k] for k in self.embedding_keys]

    def load_token(self, pipe, token: str, vectors: list) -> None:
        """Add `token` to every tokenizer/encoder, exactly as stock diffusers' load_textual_inversion does."""
        for (tok, te), v in zip(self.text_pairs(pipe), vectors):
            v = v.reshape(-1, v.shape[-1]).to(te.dtype)
            pipe.load_textual_inversion(v if v.shape[0] > 1 else v[0], token=token, tokenizer=tok, text_encoder=te)


class SDAdapter(Adapter):
    """Stable Diffusion 1.x / 2.x: one CLIP text encoder, its last hidden states as cross-attention."""

    family = "sd"
    label = "SD 1.x/2.x"
    pipeline_class_name = "StableDiffusionPipeline"
    kohya_architecture = "stable-diffusion-v1/lora"
    kohya_base_version = "sd_v1"

    def text_encoders(self, pipe) -> list:
        return [pipe.text_encoder]

    def tokenizers(self, pipe) -> list:
        return [pipe.tokenizer]

    def encode(self, pipe, ids: list, resolution: int) -> dict:
        return {"encoder_hidden_states": pipe.text_encoder(ids[0])[0]}


class SDXLAdapter(Adapter):
    """SDXL: CLIP-L and OpenCLIP-G; the penultimate hidden states of both, concatenated, as
    cross-attention; text_encoder_2's pooled projection and the size/crop `time_ids` as the
    UNet's added conditioning. A learnt token has one vector per encoder (clip_l, clip_g)."""

    family = "sdxl"
    label = "SDXL"
    pipeline_class_name = "StableDiffusionXLPipeline"
    embedding_keys = ("clip_l", "clip_g")
    kohya_architecture = "stable-diffusion-xl-v1-base/lora"
    kohya_base_version = "sdxl_base_v1-0"

    def text_encoders(self, pipe) -> list:
        return [pipe.text_encoder, pipe.text_encoder_2]

    def tokenizers(self, pipe) -> list:
        return [pipe.tokenizer, pipe.tokenizer_2]

    def encode(self, pipe, ids: list, resolution: int) -> dict:
        import torch

        hidden, pooled = [], None
        for te, x in zip(self.text_encoders(pipe), ids):
            out = te(x, output_hidden_states=True)
            if out[0].ndim == 2:  # CLIPTextModelWithProjection: its text_embeds are the pooled prompt
                pooled = out[0]
            hidden.append(out.hidden_states[-2])
        n = ids[0].shape[0]
        # (original size, crop top-left, target size), as the pipeline's _get_add_time_ids at this size
        time_ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]], dtype=hidden[0].dtype,
                                device=hidden[0].device).repeat(n, 1)
        return {"encoder_hidden_states": torch.cat(hidden, dim=-1), "text_embeds": pooled, "time_ids": time_ids}


ADAPTERS = {a.family: a for a in (SDAdapter(), SDXLAdapter())}
CLASS_FAMILY = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
}
SUPPORTED = "SD 1.x/2.x (StableDiffusionPipeline) or SDXL (StableDiffusionXLPipeline)"


def adapter(family_or_pipe) -> Adapter:
    """The adapter of a family name ('sd', 'sdxl') or of a loaded pipeline."""
    if isinstance(family_or_pipe, str):
        return ADAPTERS[family_or_pipe]
    return ADAPTERS[family_of_pipe(family_or_pipe)]


def family_of_pipe(pipe) -> str:
    name = type(pipe).__name__
    if name in CLASS_FAMILY:
        return CLASS_FAMILY[name]
    return "sdxl" if getattr(pipe, "text_encoder_2", None) is not None else "sd"


def family_of_folder(path: Path) -> str:
    """The family of a diffusers pipeline folder, from model_index.json's _class_name."""
    path = Path(path)
    try:
        name = json.loads((path / "model_index.json").read_text()).get("_class_name", "")
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"{path / 'model_index.json'} is not readable JSON ({err})") from None
    if name not in CLASS_FAMILY:
        raise UserError(f"{path} holds a {name or 'pipeline of unknown class'}; Studio takes {SUPPORTED} bases")
    return CLASS_FAMILY[name]


def safetensors_keys(path: Path) -> list[str]:
    """Tensor names of a .safetensors file, from its JSON header (no tensor is read)."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise UserError(f"{path} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:
            raise UserError(f"{path} is not a safetensors file (its header length is implausible)")
        try:
            header = json.loads(fh.read(n))
        except ValueError:
            raise UserError(f"{path} is not a safetensors file (its header is not JSON)") from None
    return [k for k in header if k != "__metadata__"]


def family_of_keys(keys) -> str | None:
    """'sdxl', 'sd1', 'sd2' from original (single-file) checkpoint tensor names; None if neither."""
    keys = list(keys)
    if any(k.startswith("conditioner.embedders.1.") for k in keys):
        return "sdxl"
    if any(k.startswith("cond_stage_model.transformer.") for k in keys):
        return "sd1"
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return "sd2"
    return None


def family_of_file(path: Path) -> str:
    """'sd' or 'sdxl' for a single-file checkpoint; one-line UserError naming the supported layouts."""
    path = Path(path)
    if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
        raise UserError(f"{path} is not a .safetensors file; --base takes a diffusers pipeline folder, a hub id, or a "
                        "single .safetensors checkpoint (SD 1.x, SD 2.x or SDXL)")
    found = family_of_keys(safetensors_keys(path))
    if found is None:
        raise UserError(f"{path} is a checkpoint of unknown layout; single files must be SD 1.x "
                        "(cond_stage_model.transformer.*), SD 2.x (cond_stage_model.model.*) or SDXL "
                        "(conditioner.embedders.1.*) checkpoints")
    return "sdxl" if found == "sdxl" else "sd"


def single_file_config(path: Path) -> Path:
    """The local diffusers config folder of a single-file base: $STUDIO_BASE_CONFIG, else
    <file stem>.config/ beside the file (model_index.json and each component's config and
    tokenizer files, e.g. a hub repo downloaded without its weights)."""
    path = Path(path)
    env = os.environ.get(CONFIG_ENV)
    config = Path(env) if env else path.with_name(path.stem + CONFIG_SUFFIX)
    if not (config / "model_index.json").is_file():
        raise FileNotFoundError(
            f"{path} is a single-file checkpoint and needs its diffusers configs (model_index.json, component "
            f"configs, tokenizers) in {config}/ (or the folder ${CONFIG_ENV} names); e.g. `huggingface-cli download "
            f"<its hub repo> --exclude '*.safetensors' '*.bin' --local-dir {config}`")
    return config


def family_of(base) -> str | None:
    """The family of a base name as Studio stores it: None or an embedded base's name, a folder, a
    single file; None when it cannot be told without loading (a hub id)."""
    from generators.base_source import base_path

    path = Path(base_path(base))
    if path.is_dir() and (path / "model_index.json").is_file():
        return family_of_folder(path)
    if path.is_file():
        return family_of_file(path)
    return None


def _family_kwargs(family: str, kwargs: dict) -> dict:
    """SDXL pipelines have no safety checker: leave its arguments out rather than warn about them."""
    if family == "sd":
        return kwargs
    return {k: v for k, v in kwargs.items() if k not in ("safety_checker", "requires_safety_checker")}


def load_pipeline(source, kind: str, **kwargs):
    """The pipeline of a base whose kind ('folder', 'file', 'hub') base_source decided."""
    if kind == "folder":
        fam = family_of_folder(source)
        return adapter(fam).pipeline_class.from_pretrained(Path(source), local_files_only=True,
                                                           **_family_kwargs(fam, kwargs))
    if kind == "file":
        fam = family_of_file(source)
        config = single_file_config(source)
        conf_family = family_of_folder(config)
        if conf_family != fam:
            raise UserError(f"{source} is an {ADAPTERS[fam].label} checkpoint but its config folder {config} is for "
                            f"{ADAPTERS[conf_family].label}")
        return adapter(fam).pipeline_class.from_single_file(str(source), config=str(config), local_files_only=True,
                                                            **_family_kwargs(fam, kwargs))
    # a hub id: its model_index.json (through the normal cache) names the class
    from diffusers import DiffusionPipeline

    local = kwargs.get("local_files_only", False)
    name = DiffusionPipeline.load_config(str(source), local_files_only=local).get("_class_name", "")
    if name not in CLASS_FAMILY:
        raise UserError(f"{source} is a {name or 'pipeline of unknown class'}; Studio takes {SUPPORTED} bases")
    fam = CLASS_FAMILY[name]
    return adapter(fam).pipeline_class.from_pretrained(str(source), **_family_kwargs(fam, kwargs))
