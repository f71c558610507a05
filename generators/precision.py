"""Mixed precision for the trainers, written once: `autocast(device, precision)` and
`grad_scaler(device, precision)` over "fp32" (autocast off), "bf16" and "fp16".

Why torch.autocast / torch.amp.GradScaler directly, not accelerate's `Accelerator` (checked
against accelerate in the venv): the Accelerator's mixed precision comes with
`Accelerator.prepare`, which owns device placement and wraps each optimizer in an
`AcceleratedOptimizer` that steps through the Accelerator's one GradScaler (the GAN keeps one
scaler per network), under a process-wide `AcceleratorState`. Its `save_state`/`load_state`
write models as safetensors but optimizer, scheduler, scaler and RNG states with `torch.save`
(pickle; loaded back with weights_only=False). Studio's checkpoints are safetensors only, with
optimizer state as named tensors (generators/optim_state.py) and resume bit-exact from them
(e.g. sd_mini's train_state.safetensors); the trainers place their own tensors and keep their
own RNG streams. Two context managers need none of that, and change no numerics.
"""

from __future__ import annotations

import torch

from generators.errors import UserError

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _device_type(device) -> str:
    return torch.device(device).type


def amp_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of `precision` (None for fp32: no autocast)."""
    if precision not in AMP_DTYPES:
        raise UserError(f"precision must be one of {', '.join(AMP_DTYPES)}, got {precision!r}")
    return AMP_DTYPES[precision]


def autocast(device, precision: str) -> torch.autocast:
    """A fresh autocast context for `device` (a torch.device or its type): off for fp32."""
    dtype = amp_dtype(precision)
    if dtype is None:
        return torch.autocast(_device_type(device), enabled=False)
    return torch.autocast(_device_type(device), dtype=dtype)


def grad_scaler(device, precision: str) -> torch.amp.GradScaler:
    """A GradScaler for `device`, enabled for fp16 only (a disabled one passes losses and steps through)."""
    amp_dtype(precision)
    return torch.amp.GradScaler(_device_type(device), enabled=precision == "fp16")
