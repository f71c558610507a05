"""Exports of a museum style that load elsewhere.

diffusers: `pytorch_lora_weights.safetensors` (the shared LoRA, diffusers/peft keys, loadable
by `pipe.load_lora_weights`) and `<name>.safetensors` ({token: vector}, loadable by
`pipe.load_textual_inversion`; on SDXL {"clip_l": ..., "clip_g": ...}, one vector per text
encoder, each loaded with `load_textual_inversion(..., text_encoder=, tokenizer=)`).

kohya (A1111, ComfyUI, Forge): `<name>.safetensors` with `lora_unet_*` keys, `lora_down` /
`lora_up` weights, `.alpha` = the lora_alpha used in training (so alpha/rank gives our scale
for any alpha), the token bundled as `bundle_emb.<name>.string_to_param.*`, and `ss_*` /
`modelspec.*` metadata with the token as trigger phrase; plus `<name>.embedding.safetensors`
beside it for tools that do not read bundled embeddings. On SDXL the bundled token is
`bundle_emb.<name>.clip_l` / `.clip_g` and the embedding file has `clip_l` / `clip_g` keys (the layout
A1111 and ComfyUI read); the LoRA keys are the diffusers module names with kohya's prefix
(`lora_unet_down_blocks_1_attentions_0_...`), which diffusers' and ComfyUI's kohya loaders map.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

from generators import bases
from generators.errors import UserError
from generators.files import save_tensors
from styles.museum import Museum

FORMATS = ("diffusers", "kohya")


def _check_out(out: Path) -> Path:
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder; choose a new --out")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def _finish(staging: Path, out: Path) -> Path:
    if out.exists():
        out.rmdir()
    staging.rename(out)
    return out


def _family(museum: Museum) -> bases.Adapter:
    return bases.adapter(museum.family or "sd")


def token_tensors(museum: Museum, name: str) -> dict[str, torch.Tensor]:
    """The style's token file in its family's layout, each vector (n, D)."""
    entry, family = museum.style(name), _family(museum)
    vectors = family.token_vectors(museum.embedding(name), entry.token)
    return family.token_file(entry.token, [v.reshape(-1, v.shape[-1]) for v in vectors])


def _usage(family: bases.Adapter, out, name: str, token: str) -> str:
    if family.embedding_keys is None:
        return f"pipe.load_textual_inversion('{out}/{name}.safetensors')\n"
    lines = ["from safetensors.torch import load_file\n", f"emb = load_file('{out}/{name}.safetensors')\n"]
    for key, (te, tok) in zip(family.embedding_keys, (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2"))):
        lines.append(f"pipe.load_textual_inversion(emb['{key}'], token='{token}', text_encoder=pipe.{te}, tokenizer=pipe.{tok})\n")
    return "".join(lines)


def export_diffusers(museum: Museum, name: str, out: Path) -> Path:
    entry = museum.style(name)
    family = _family(museum)
    staging = _check_out(out)
    config = museum.manifest(name)["config"]
    save_tensors(museum.lora_state(), staging / "pytorch_lora_weights.safetensors",
              metadata={"format": "pt", "studio.rank": str(config["rank"]), "studio.alpha": str(config["alpha"]),
                        "studio.base": museum.base, "studio.styles": json.dumps([s.name for s in museum.styles])})
    save_tensors(token_tensors(museum, name), staging / f"{name}.safetensors")
    (staging / "README.md").write_text(
        f"# {name}\n\nShared LoRA of the Studio museum (base `{museum.base}`, {family.label}, {museum.n_tasks} styles) and "
        f"the token `{entry.token}`.\n\n```python\npipe.load_lora_weights('{out}', weight_name='pytorch_lora_weights.safetensors')\n"
        + _usage(family, out, name, entry.token)
        + f"image = pipe('a house on the grass background, {entry.token}').images[0]\n```\n"
    )
    return _finish(staging, Path(out))


def kohya_state_dict(state: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """diffusers/peft keys 'unet.<module>.lora_A.weight' -> kohya 'lora_unet_<module_>.lora_down.weight',
    by diffusers' convert_state_dict_to_kohya, with the LoRA's own alpha: the library writes
    alpha = rank (scale 1), which would change the scale of a LoRA trained with another alpha."""
    from diffusers.utils import convert_state_dict_to_kohya

    if any(not key.startswith("unet.") or ".lora_" not in key for key in state):
        raise ValueError(f"unexpected LoRA keys {[k for k in state if not k.startswith('unet.') or '.lora_' not in k][:3]}")
    out = convert_state_dict_to_kohya(state)
    return {key: torch.tensor(float(alpha)) if key.endswith(".alpha") else value.contiguous() for key, value in out.items()}


def export_kohya(museum: Museum, name: str, out: Path) -> Path:
    entry = museum.style(name)
    manifest = museum.manifest(name)
    config = manifest["config"]
    family = _family(museum)
    staging = _check_out(out)
    tensors = kohya_state_dict(museum.lora_state(), config["alpha"])
    embedding = token_tensors(museum, name)
    if family.embedding_keys is None:
        tensors[f"bundle_emb.{name}.string_to_param.*"] = embedding[entry.token]
    else:  # SDXL: one vector per encoder, named as A1111 and ComfyUI read them
        tensors.update({f"bundle_emb.{name}.{k}": v for k, v in embedding.items()})
    metadata = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(config["rank"]),
        "ss_network_alpha": str(config["alpha"]),
        "ss_output_name": name,
        "ss_base_model_version": family.kohya_base_version,
        "ss_sd_model_name": museum.base,
        "ss_num_train_images": str(len(manifest["images"])),
        "ss_max_train_steps": str(config["steps"]),
        "ss_learning_rate": str(config["lora_lr"]),
        "ss_training_comment": f"Studio museum shared LoRA ({museum.n_tasks} styles); trigger {entry.token}",
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": family.kohya_architecture,
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "modelspec.title": name,
        "modelspec.trigger_phrase": entry.token,
        "modelspec.description": manifest.get("description", ""),
        "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "modelspec.resolution": "",
    }
    save_tensors(tensors, staging / f"{name}.safetensors", metadata=metadata)
    save_tensors(embedding, staging / f"{name}.embedding.safetensors")
    return _finish(staging, Path(out))


def export_style(museum: Museum, name: str, fmt: str, out: Path) -> Path:
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return (export_diffusers if fmt == "diffusers" else export_kohya)(museum, name, out)
