"""An optimizer's per-parameter state (Adam's moments and step) as flat safetensors entries, and
back: the one copy every resumable trainer uses (gan-mini and studio-mini pretraining, the
lifelong GAN's tasks, museum tasks, the synthetic fit).

torch's own `optimizer.state_dict()` would need pickle (torch.save) to store; these are plain
tensors under readable names, so a checkpoint stays a safetensors file. Each trainer keeps the
key layout its checkpoints already have: `labels` names each parameter and `layout` places the
state's name ("exp_avg", "exp_avg_sq", "step", ...) beside it.
"""

from __future__ import annotations

import re

import torch

DEFAULT_LAYOUT = "{param}.{state}"  # e.g. "opt_G.3.exp_avg"


def _labelled(params, prefix: str):
    """(label, parameter) pairs: a dict's own names, else prefix + position."""
    if isinstance(params, dict):
        return list(params.items())
    return [(f"{prefix}{i}", p) for i, p in enumerate(params)]


def optimizer_tensors(opt: torch.optim.Optimizer, params, prefix: str = "",
                      layout: str = DEFAULT_LAYOUT) -> dict[str, torch.Tensor]:
    """Every state entry of every parameter in `params` (a list, labelled prefix + position, or a
    dict label -> parameter) as contiguous CPU tensors; parameters without state are left out."""
    out = {}
    for label, p in _labelled(params, prefix):
        for key, value in opt.state.get(p, {}).items():
            t = value if torch.is_tensor(value) else torch.tensor(float(value))
            out[layout.format(param=label, state=key)] = t.detach().to("cpu").contiguous()
    return out


def load_optimizer(opt: torch.optim.Optimizer, params, tensors: dict, prefix: str = "", device=None,
                   layout: str = DEFAULT_LAYOUT) -> None:
    """Put back what optimizer_tensors saved (parameters with no saved state keep none). The
    moments go to `device` (default: their parameter's); `step` stays a float on the CPU, as torch keeps it,
    unless the optimizer is fused or capturable (then it lives beside the parameters)."""
    group = opt.param_groups[0]
    on_device = bool(group.get("fused") or group.get("capturable"))
    before, middle, after = re.split(r"\{param\}|\{state\}", layout)
    param_first = layout.index("{param}") < layout.index("{state}")
    state_re, param_re = r"(?P<state>[A-Za-z_]\w*)", r"(?P<param>.+)"
    pattern = re.compile(re.escape(before) + (param_re if param_first else state_re) + re.escape(middle)
                         + (state_re if param_first else param_re) + re.escape(after) + r"\Z")
    saved: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        m = pattern.match(key)
        if m is not None:
            saved.setdefault(m.group("param"), {})[m.group("state")] = t
    for label, p in _labelled(params, prefix):
        if label not in saved:
            continue
        where = device if device is not None else p.device
        opt.state[p] = {name: (t.to(where if on_device else "cpu", torch.float32, copy=True).reshape(()) if name == "step"
                               else t.to(where, copy=True))
                        for name, t in saved[label].items()}
