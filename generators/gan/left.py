"""LeFT modulators (LFS-GAN, "Learnable Factorized Tensor"), written with tensorly (pytorch backend).

docs/methods.md §2 (LFS-GAN, ICCV 2023). Every conv and FC layer of a frozen StyleGAN2-style
generator (mapping FCs, style affines, synthesis convs, toRGB) gets a small per-task modulator
that rewrites its weight; the base weights never change, so a task's modulators are all it
stores and earlier tasks cannot be forgotten.

Conv weight W in R^{Cout x Cin x k x k} (docs/methods.md §2.1, eqs. 1-4), K = k*k:

    (1)  W_hat = W ⊙ M + s_W · A
    (2)  M[o, c, s] = Σ_i A_in[c, i] · act( Σ_j A_out[o, j] · G[i, j, s] + add1[o, s] )
         i.e.  M = act( G ×_1 A_out + add1 ) ×_0 A_in          (tensorly mode products)
    (3)  add1 = B_out · B_kᵀ                                     (rank-r, [Cout, K])
    (4)  A = H ×_0 P_in ×_1 P_out                               (Tucker-2, core H [r, r, K])

G ∈ R^{r×r×K} is the rank-r core, A_out ∈ R^{Cout×r}, A_in ∈ R^{Cin×r} the channel factors;
without `act` (2) is a Tucker-2 reconstruction over the two channel modes, the ReLU between
the two mode products is the nonlinear reconstruction. The additive term (4) is a linear
Tucker-2 tensor.

FC weight W in R^{out x in} (docs/methods.md §2.1, eq. 5):

    (5)  W_hat = W ⊙ (U Vᵀ) + s_W · P Qᵀ,     b_hat = b ⊙ b_mul + b_add

(U Vᵀ and P Qᵀ are rank-r CP reconstructions, `tl.cp_to_tensor`.)

s_W is a constant, the RMS of the frozen W (recomputed from the base, never stored), so the
additive branch moves W at the same relative rate as the multiplicative one whatever the
layer's equalized-lr scaling (mapping FCs store W / lr_mul).

Initialisation (identity, exactly: the modulated generator equals the base bitwise):
  * multiplicative: the first rank component is all ones (A_in[:, 0] = A_out[:, 0] = 1,
    G[0, 0, :] = 1, U[:, 0] = V[:, 0] = 1); further components (rank > 1) start with a zero
    factor on one side (A_in[:, 1:] = 0, G[0, 1:, :] = 0, U[:, 1:] = 0) and small random
    values on the other, so M = 1 exactly and yet every component gets a distinct gradient.
  * additive (fix of the released code's defect 1, where both factors of every additive
    term are zero so its gradient is identically zero and it never trains): one factor is
    zero (P_out, B_out, P), the others small random (P_in, H, B_k, Q), so A = 0 and
    add1 = 0 exactly, the zero factor gets a non-zero gradient at the first step and,
    once it moved, so do the others.
  * bias: b_mul = 1, b_add = 0.

Use:

    mods = attach_left(G, LeFTConfig(rank=1))  # sets each layer's weight_modulator; G unchanged in value
    ... train [p for p in left_parameters(G)] ...
    Gs = bake(G)                                # a plain Generator with the modulated weights baked in
    state = left_state(G); load_left_state(G, state)   # what a task stores (safetensors-friendly)

`bake` computes every modulated weight once, so sampling a task costs exactly what sampling
the base costs.
"""

from __future__ import annotations

import copy
import types
from dataclasses import dataclass

import tensorly as tl
import torch
from torch import nn

from generators.config import SavedConfig
from generators.errors import UserError
from generators.gan.layers import HookedLayer, modulatable_layers

tl.set_backend("pytorch")  # process-wide tensorly default (nothing else in Studio uses tensorly)

MODULATOR_ATTR = "weight_modulator"
ACTIVATIONS = ("relu", "none")


@dataclass
class LeFTConfig(SavedConfig):
    """LeFT modulators of one task (saved in task.json).

    rank: r of the core / channel factors (docs/methods.md §2.1; default 1).
    activation: the nonlinear reconstruction between the two mode products ("relu", or
        "none" for a plain Tucker-2 ablation).
    additive: use the additive branches A (conv), P Qᵀ (FC), add1 and b_add.
    modulate_bias: b_hat = b ⊙ b_mul + b_add on FC layers (mapping FCs, style affines).
    init_std: std of the random factors at initialisation (the additive branches' non-zero
        factors and the rank > 1 components' non-zero factors).
    """

    rank: int = 1
    activation: str = "relu"
    additive: bool = True
    modulate_bias: bool = True
    init_std: float = 0.1

    def __post_init__(self):
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            raise UserError(f"LeFT rank must be a positive integer, got {self.rank!r}")
        if self.activation not in ACTIVATIONS:
            raise UserError(f"LeFT activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if not (self.init_std > 0):
            raise UserError(f"LeFT init_std must be positive, got {self.init_std!r}")


def _rms(w: torch.Tensor) -> float:
    return float(w.detach().float().pow(2).mean().sqrt().clamp_min(1e-8))


class LeFTConv(nn.Module):
    """LeFT modulator of a conv weight [Cout, Cin, k, k]: eqs. (1)-(4) of the module docstring."""

    def __init__(self, out_channels: int, in_channels: int, kernel_size: int, cfg: LeFTConfig,
                 weight_rms: float = 1.0, generator: torch.Generator | None = None):
        super().__init__()
        r, K, std = cfg.rank, kernel_size * kernel_size, cfg.init_std
        self.shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.rank, self.activation, self.additive = r, cfg.activation, cfg.additive

        def rnd(*shape):
            return torch.randn(*shape, generator=generator) * std

        core = torch.zeros(r, r, K)
        core[0, 0] = 1.0
        a_out = torch.zeros(out_channels, r)
        a_out[:, 0] = 1.0
        a_in = torch.zeros(in_channels, r)
        a_in[:, 0] = 1.0
        if r > 1:  # components 1.. : zero A_in columns and G[0, 1:] keep M = 1; random rest breaks symmetry
            core[1:] = 1.0 + rnd(r - 1, r, K)
            a_out[:, 1:] = rnd(out_channels, r - 1)
        self.core = nn.Parameter(core)  # G [r, r, K]
        self.a_out = nn.Parameter(a_out)  # A_out [Cout, r]
        self.a_in = nn.Parameter(a_in)  # A_in [Cin, r]
        if self.additive:
            self.add1_out = nn.Parameter(torch.zeros(out_channels, r))  # B_out (zero)
            self.add1_k = nn.Parameter(rnd(K, r))  # B_k (small random)
            self.add_core = nn.Parameter(rnd(r, r, K))  # H
            self.add_out = nn.Parameter(torch.zeros(out_channels, r))  # P_out (zero)
            self.add_in = nn.Parameter(rnd(in_channels, r))  # P_in (small random)
        self.register_buffer("weight_rms", torch.tensor(float(weight_rms)), persistent=False)

    def multiplier(self) -> torch.Tensor:
        """M [Cout, Cin, k, k], eq. (2)."""
        cout, cin, k, _ = self.shape
        t = tl.tenalg.mode_dot(self.core, self.a_out, mode=1)  # [r, Cout, K]: Σ_j A_out[o,j] G[i,j,s]
        if self.additive:
            t = t + tl.cp_to_tensor((None, [self.add1_out, self.add1_k]))[None]  # + add1[o, s], eq. (3)
        if self.activation == "relu":
            t = torch.relu(t)
        m = tl.tenalg.mode_dot(t, self.a_in, mode=0)  # [Cin, Cout, K]: Σ_i A_in[c,i] act(...)
        return m.permute(1, 0, 2).reshape(cout, cin, k, k)

    def additive_term(self) -> torch.Tensor:
        """A [Cout, Cin, k, k], eq. (4): the Tucker-2 tensor H ×_0 P_in ×_1 P_out."""
        cout, cin, k, _ = self.shape
        a = tl.tenalg.multi_mode_dot(self.add_core, [self.add_in, self.add_out], modes=[0, 1])  # [Cin, Cout, K]
        return a.permute(1, 0, 2).reshape(cout, cin, k, k)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        out = weight * self.multiplier().to(weight.dtype)
        if self.additive:
            out = out + self.additive_term().to(weight.dtype) * self.weight_rms
        return out

    def modulate_bias(self, bias):
        return bias

    def extra_repr(self):
        return f"shape={self.shape}, rank={self.rank}, activation={self.activation}, additive={self.additive}"


class LeFTLinear(nn.Module):
    """LeFT modulator of an FC weight [out, in] (and its bias): eq. (5) of the module docstring."""

    def __init__(self, out_features: int, in_features: int, cfg: LeFTConfig, has_bias: bool,
                 weight_rms: float = 1.0, generator: torch.Generator | None = None):
        super().__init__()
        r, std = cfg.rank, cfg.init_std
        self.shape = (out_features, in_features)
        self.rank, self.additive = r, cfg.additive

        def rnd(*shape):
            return torch.randn(*shape, generator=generator) * std

        u = torch.zeros(out_features, r)
        u[:, 0] = 1.0
        v = torch.zeros(in_features, r)
        v[:, 0] = 1.0
        if r > 1:
            v[:, 1:] = rnd(in_features, r - 1)  # U[:, 1:] = 0 keeps U Vᵀ = 1
        self.u = nn.Parameter(u)
        self.v = nn.Parameter(v)
        if self.additive:
            self.p = nn.Parameter(torch.zeros(out_features, r))  # zero
            self.q = nn.Parameter(rnd(in_features, r))  # small random
        self.bias_modulated = bool(has_bias and cfg.modulate_bias)
        if self.bias_modulated:
            self.b_mul = nn.Parameter(torch.ones(out_features))
            if self.additive:
                self.b_add = nn.Parameter(torch.zeros(out_features))
        self.register_buffer("weight_rms", torch.tensor(float(weight_rms)), persistent=False)

    def multiplier(self) -> torch.Tensor:
        return tl.cp_to_tensor((None, [self.u, self.v]))  # U Vᵀ

    def additive_term(self) -> torch.Tensor:
        return tl.cp_to_tensor((None, [self.p, self.q]))  # P Qᵀ

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        out = weight * self.multiplier().to(weight.dtype)
        if self.additive:
            out = out + self.additive_term().to(weight.dtype) * self.weight_rms
        return out

    def modulate_bias(self, bias):
        if bias is None or not self.bias_modulated:
            return bias
        out = bias * self.b_mul.to(bias.dtype)
        if self.additive:
            out = out + self.b_add.to(bias.dtype)
        return out

    def extra_repr(self):
        return f"shape={self.shape}, rank={self.rank}, additive={self.additive}, bias={self.bias_modulated}"


def _modulated_effective_bias(self: HookedLayer):
    """effective_bias() of a layer with a LeFT modulator: b_hat * bias_gain (eq. 5)."""
    if self.bias is None:
        return None
    b = self.weight_modulator.modulate_bias(self.bias)
    return b * self.bias_gain if self.bias_gain != 1.0 else b


def _layers(G: nn.Module) -> list[tuple[str, HookedLayer]]:
    # only the generator's own conv/FC layers (modulators are not HookedLayers)
    return modulatable_layers(G)


def has_left(G: nn.Module) -> bool:
    return any(isinstance(getattr(m, MODULATOR_ATTR, None), (LeFTConv, LeFTLinear)) for _, m in _layers(G))


def attach_left(G: nn.Module, cfg: LeFTConfig | None = None, seed: int = 0) -> dict[str, nn.Module]:
    """Give every conv / FC of G a fresh LeFT modulator (identity at init); returns {layer name: modulator}.

    Sets `layer.weight_modulator` (it becomes a registered submodule, so `G.parameters()`
    then lists the modulators' factors too) and, for FC layers with a bias, overrides the
    layer's `effective_bias` so the bias is modulated as well. The base parameters are left
    as they are (freeze them with `G.requires_grad_(False)` before attaching, or use
    `left_parameters(G)` for the optimizer). The random factors come from `seed`.
    """
    cfg = cfg or LeFTConfig()
    if has_left(G):
        raise ValueError("this generator already has LeFT modulators; detach_left(G) first")
    gen = torch.Generator().manual_seed(int(seed))
    out = {}
    for name, layer in _layers(G):
        w = layer.weight
        if w.ndim == 4:
            mod = LeFTConv(w.shape[0], w.shape[1], w.shape[2], cfg, _rms(w), gen)
        elif w.ndim == 2:
            mod = LeFTLinear(w.shape[0], w.shape[1], cfg, layer.bias is not None, _rms(w), gen)
        else:  # pragma: no cover - every hooked layer is a conv or an FC
            raise ValueError(f"layer {name} has a weight of shape {tuple(w.shape)}")
        mod = mod.to(device=w.device)
        layer.weight_modulator = mod
        if isinstance(mod, LeFTLinear) and mod.bias_modulated:
            layer.effective_bias = types.MethodType(_modulated_effective_bias, layer)
        out[name] = mod
    return out


def detach_left(G: nn.Module) -> None:
    """Remove every LeFT modulator from G (G is the base again)."""
    for _, layer in _layers(G):
        if isinstance(getattr(layer, MODULATOR_ATTR, None), (LeFTConv, LeFTLinear)):
            delattr(layer, MODULATOR_ATTR)
            layer.weight_modulator = None
        layer.__dict__.pop("effective_bias", None)


def left_modules(G: nn.Module) -> dict[str, nn.Module]:
    return {name: layer.weight_modulator for name, layer in _layers(G)
            if isinstance(getattr(layer, MODULATOR_ATTR, None), (LeFTConv, LeFTLinear))}


def left_parameters(G: nn.Module) -> list[nn.Parameter]:
    """The trainable LeFT factors, in a fixed order (layer order, then parameter order)."""
    return [p for mod in left_modules(G).values() for p in mod.parameters()]


def left_state(G: nn.Module) -> dict[str, torch.Tensor]:
    """{"<layer>.<factor>": tensor} of every modulator (contiguous CPU copies): what a task stores."""
    return {f"{name}.{k}": v.detach().to("cpu").contiguous()
            for name, mod in left_modules(G).items() for k, v in mod.state_dict().items()}


def load_left_state(G: nn.Module, state: dict[str, torch.Tensor], where: str = "modulators") -> None:
    """Load `left_state` output into G's attached modulators (exact key and shape match required)."""
    own = {}
    for name, mod in left_modules(G).items():
        for k, v in mod.state_dict().items():
            own[f"{name}.{k}"] = v
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise UserError(f"{where} do not fit this generator and rank (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]})")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise UserError(f"{where}: {k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}")
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(state[k].to(v.device, v.dtype))


def count_left_parameters(G: nn.Module) -> int:
    return sum(p.numel() for p in left_parameters(G))


@torch.no_grad()
def bake(G: nn.Module, w_avg: torch.Tensor | None = None) -> nn.Module:
    """A plain copy of G (no modulators) whose weights and biases are the modulated ones.

    Every modulated weight is computed once here, so sampling the result costs the same as
    sampling the base generator. Values equal G's with modulators (`effective_weight()`
    computes modulator(W) * weight_gain in both cases). `w_avg` (optional) replaces the
    mapping's truncation centre. Returned in eval mode with requires_grad off.
    """
    baked = copy.deepcopy(G)
    for _, layer in _layers(baked):
        mod = getattr(layer, MODULATOR_ATTR, None)
        if not isinstance(mod, (LeFTConv, LeFTLinear)):
            continue
        new_w = mod(layer.weight).detach().clone()
        new_b = None if layer.bias is None else mod.modulate_bias(layer.bias).detach().clone()
        delattr(layer, MODULATOR_ATTR)
        layer.weight_modulator = None
        layer.__dict__.pop("effective_bias", None)
        layer.weight.data = new_w
        if new_b is not None:
            layer.bias.data = new_b
    if w_avg is not None:
        baked.mapping.w_avg.copy_(w_avg.to(baked.mapping.w_avg.device))
    return baked.eval().requires_grad_(False)


__all__ = [
    "LeFTConfig", "LeFTConv", "LeFTLinear", "attach_left", "detach_left", "has_left", "left_modules",
    "left_parameters", "left_state", "load_left_state", "count_left_parameters", "bake",
]

