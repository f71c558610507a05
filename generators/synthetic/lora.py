"""The synthetic fit's LoRA and learnt class tokens: attaching them to a base, saving, loading (docs/methods.md §3.2, §4).

One LoRA (peft, adapter name ``synth``) on the UNet attention and, optionally, on every text
encoder's attention (SDXL: both). :func:`lora_state` gives it in diffusers' format (keys
prefixed "unet." / "text_encoder." / "text_encoder_2.", §4.1), which stock diffusers loads
with ``pipe.load_lora_weights``; :func:`load_lora_into` does just that (and fuses it).

``class_words="learnt"``: every class gets its own new token ``<class-words>``
(:func:`class_token`), started at the mean embedding of the class's plain words
(:func:`add_class_tokens`) and saved beside the LoRA as ``class_tokens.safetensors``
({token: vector}; SDXL {"clip_l.<token>": ..., "clip_g.<token>": ...}, §4.2), loaded with
``pipe.load_textual_inversion``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file

from generators import bases
from generators.errors import UserError
from generators.synthetic import extract as ex

if TYPE_CHECKING:
    from generators.synthetic.fit import FitConfig

ADAPTER = "synth"
CLASS_TOKENS_FILE = "class_tokens.safetensors"


def class_token(class_name: str) -> str:
    """The learnt token of a class: '<' + its words joined by '-' + '>' ('sea_gull' -> '<sea-gull>')."""
    return "<" + ex.class_words(class_name).replace(" ", "-") + ">"


def text_encoder_prefixes(pipe) -> list[tuple[str, torch.nn.Module]]:
    """(LoRA key prefix, text encoder) of every encoder of the base: 'text_encoder' and, on SDXL,
    'text_encoder_2' (the prefixes diffusers' load_lora_weights reads)."""
    return [("text_encoder" if i == 0 else f"text_encoder_{i + 1}", te)
            for i, te in enumerate(bases.adapter(pipe).text_encoders(pipe))]


def attach(pipe, cfg: FitConfig) -> list[tuple[str, torch.nn.Parameter]]:
    """Add the LoRA to the UNet (and every text encoder); returns the trainable (name, parameter) pairs."""
    from peft import LoraConfig, inject_adapter_in_model

    encoders = text_encoder_prefixes(pipe)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        pipe.unet.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=list(cfg.target_modules),
                                         init_lora_weights=True), adapter_name=ADAPTER)
        if cfg.text_encoder_lora:
            for _, te in encoders:
                inject_adapter_in_model(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=list(cfg.text_target_modules),
                                                   init_lora_weights=True), te, adapter_name=ADAPTER)
    params = []
    for prefix, model in [("unet", pipe.unet)] + encoders:
        model.requires_grad_(False)
        for name, p in model.named_parameters():
            if f".{ADAPTER}." in name or name.endswith(f".{ADAPTER}.weight"):
                p.requires_grad_(True)
                params.append((f"{prefix}.{name}", p))
    if not params:
        raise UserError("the LoRA found no target modules in this base; check the base is a Stable Diffusion pipeline")
    return sorted(params, key=lambda kv: kv[0])


def add_class_tokens(pipe, classes: list[str], tok=None, te=None) -> list[int]:
    """A new token per class, each started at the mean embedding of the class's plain words (in the
    given tokenizer and text encoder; default the first)."""
    tok, te = tok or pipe.tokenizer, te or pipe.text_encoder
    tokens = [class_token(c) for c in classes]
    taken = [t for t in tokens if t in tok.get_vocab()]
    if taken:
        raise UserError(f"the base's vocabulary already has {taken[0]}; rename that class folder or use class_words='plain'")
    word_ids = [tok(ex.class_words(c), add_special_tokens=False).input_ids for c in classes]
    tok.add_tokens(tokens)
    te.resize_token_embeddings(len(tok))
    ids = tok.convert_tokens_to_ids(tokens)
    weight = te.get_input_embeddings().weight
    with torch.no_grad():
        for token_id, words in zip(ids, word_ids):
            weight[token_id] = weight[words].mean(0)
    return ids


def class_token_file(family: bases.Adapter, tokens: list[str], rows: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """{token: vector} on one encoder; on SDXL {"clip_l.<token>": ..., "clip_g.<token>": ...}."""
    if family.embedding_keys is None:
        return {t: r.clone() for t, r in zip(tokens, rows[0])}
    return {f"{key}.{t}": r.clone() for key, enc in zip(family.embedding_keys, rows) for t, r in zip(tokens, enc)}


def load_class_tokens(pipe, path: Path) -> None:
    """Add a fit's learnt class tokens, as stock diffusers' load_textual_inversion would (into each encoder)."""
    vectors = load_file(str(path))
    family = bases.adapter(pipe)
    keys = family.embedding_keys or ("",)
    for key, (tok, te) in zip(keys, family.text_pairs(pipe)):
        prefix = f"{key}." if key else ""
        tokens = sorted(k.removeprefix(prefix) for k in vectors if k.startswith(prefix))
        pipe.load_textual_inversion([vectors[prefix + t].to(te.dtype) for t in tokens], token=tokens,
                                    tokenizer=tok, text_encoder=te)


def lora_state(pipe, cfg: FitConfig) -> dict[str, torch.Tensor]:
    """diffusers' LoRA format: peft keys with 'unet.' / 'text_encoder.' prefixes (pipe.load_lora_weights)."""
    from peft.utils import get_peft_model_state_dict

    state = {f"unet.{k}": v for k, v in get_peft_model_state_dict(pipe.unet, adapter_name=ADAPTER).items()}
    if cfg.text_encoder_lora:
        for prefix, te in text_encoder_prefixes(pipe):
            state.update({f"{prefix}.{k}": v for k, v in get_peft_model_state_dict(te, adapter_name=ADAPTER).items()})
    return {k: v.detach().float().cpu().contiguous().clone() for k, v in state.items()}


def load_lora_into(pipe, lora_path: Path, fuse: bool = True):
    """Load a fitted LoRA exactly as stock diffusers would, and fuse it (free at sampling time);
    the learnt class tokens beside it too, if the fit has them."""
    tokens = Path(lora_path).with_name(CLASS_TOKENS_FILE)
    if tokens.is_file():
        load_class_tokens(pipe, tokens)
    state = load_file(str(lora_path))
    pipe.load_lora_weights({k: v.to(pipe.unet.dtype) for k, v in state.items()}, adapter_name=ADAPTER)
    if fuse:
        pipe.fuse_lora(adapter_names=[ADAPTER])
    return pipe
