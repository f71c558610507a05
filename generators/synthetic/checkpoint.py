"""The synthetic fit's checkpoint: LoRA weights, Adam moments, the data RNG and the step, an exact
resume point (safetensors; the config and the bank's hash in its metadata)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file

from generators.errors import UserError
from generators.files import atomic_save_tensors
from generators.optim_state import load_optimizer, optimizer_tensors

OPTIMIZER_LAYOUT = "m.{state}.{param}"  # the checkpoint's names of Adam's moments: m.exp_avg.<parameter>


def save_checkpoint(path: Path, named, opt, gen, step: int, config: dict, bank_hash: str) -> None:
    tensors = {f"w.{name}": p for name, p in named}
    tensors.update(optimizer_tensors(opt, dict(named), layout=OPTIMIZER_LAYOUT))
    tensors["rng"] = gen.get_state()
    atomic_save_tensors(tensors, path, metadata={"step": str(step), "config": json.dumps(config), "bank_sha256": bank_hash})


def load_checkpoint(path: Path, named, opt, gen, same_training: Callable[[dict], bool], bank_hash: str) -> int:
    """Restore the checkpoint into `named`, `opt` and `gen`; the step to continue from. A checkpoint
    whose config fails same_training, or of another bank, is refused."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    if not same_training(json.loads(meta["config"])) or meta.get("bank_sha256") != bank_hash:
        raise UserError(f"{path} was written with other settings or another bank; start over (`studio synth fit "
                        "--restart`, or \"Start over\" in the web app) to train from the start")
    tensors = load_file(str(path))
    with torch.no_grad():
        for name, p in named:
            p.copy_(tensors[f"w.{name}"])
    load_optimizer(opt, dict(named), tensors, layout=OPTIMIZER_LAYOUT)
    gen.set_state(tensors["rng"])
    return int(meta["step"])
