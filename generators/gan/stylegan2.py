"""A small StyleGAN2 ("gan-mini") in pure PyTorch: no custom CUDA ops, runs on CPU and GPU.

Generator: a mapping network (z -> w, equalized-lr FC layers with leaky ReLU * sqrt(2),
lr multiplier 0.01) and a synthesis network from a learned 4x4 constant up to
`config.resolution`, made of modulated 3x3 convolutions with demodulation, per-layer noise
inputs with learned strength, per-layer style affines, and toRGB skip connections
(bilinear upsampling, `torch.nn.functional.interpolate`). `w_avg` is tracked for the
truncation trick. Discriminator: residual blocks, minibatch standard deviation, about the
same size as the generator.

    G = Generator(GANConfig())
    images = G(z, truncation_psi=1.0, noise_mode="const")   # [N, 3, R, R]

In eval mode `G(z)` returns images clamped to [-1, 1]; in train mode it returns the raw
output (pass `clamp=True/False` to choose). With noise_mode="const" (the default) and a fixed
z the output is deterministic; "random" draws fresh noise, "none" leaves noise out.
Modulated convolutions have two exact, interchangeable paths: the grouped-convolution trick
(`fused_modconv=True`: one conv with per-sample modulated+demodulated weights, groups=N) and
the activation-scaling path (`fused_modconv=False`: x * style -> shared conv -> * demod,
faster for training at large batch). The default is fused in eval mode, unfused in train mode.

Weight hook (for LeFT modulators of LFS-GAN)
--------------------------------------------
Every conv and FC layer that holds a weight (`EqualLinear`: mapping FCs and style affines;
`ModulatedConv2d`: synthesis convs and toRGB; `EqualConv2d`: discriminator convs) derives
from `HookedLayer`. It stores its weight as the nn.Parameter `weight` (and `bias`), and its
forward reads them ONLY through two methods:

    layer.effective_weight()  ->  modulator(weight) * weight_gain   (modulator: identity by default)
    layer.effective_bias()    ->  bias * bias_gain                  (None when the layer has no bias)

`weight` is the raw stored parameter (equalized learning rate: N(0, 1) at init, the
runtime scale `weight_gain` is applied after the modulator). To modulate a layer either
  * set `layer.weight_modulator = fn`, where fn (a callable or an nn.Module, which then
    becomes a registered submodule) maps the raw weight to a tensor of the same shape,
    e.g. `lambda w: w * (1 + delta)`; set it back to None to remove it; or
  * subclass / monkeypatch `effective_weight` (and `effective_bias`).
`modulatable_layers(G)` lists `(name, layer)` for all hooked layers. Weight shapes:
EqualLinear [out, in]; ModulatedConv2d and EqualConv2d [out, in, k, k]. A modulator also
shows in the demodulation (computed from the effective weight), as it should.
`save_generator` saves `G.state_dict()` as is: with nn.Module modulators attached their
tensors are saved too, and `load_generator` (strict) then refuses the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from generators.config import SavedConfig
from generators.errors import UserError
from generators.files import atomic_save_tensors, atomic_write_json

FORMAT = "studio-gan-mini"
FORMAT_VERSION = 1
GENERATOR_FILE = "generator.safetensors"
DISCRIMINATOR_FILE = "discriminator.safetensors"
CONFIG_FILE = "config.json"
SQRT2 = math.sqrt(2.0)
SQRT_HALF = math.sqrt(0.5)


# --------------------------------------------------------------------------- config


@dataclass
class GANConfig(SavedConfig):
    """Architecture of gan-mini; saved in every checkpoint and next to every weights file.

    `channels[i]` is the generator width at resolution 4 * 2**i (so it lists 4, 8, ..., resolution);
    `d_channels` likewise for the discriminator (None: the same as `channels`).
    """

    resolution: int = 64
    z_dim: int = 128
    w_dim: int = 256
    mapping_layers: int = 4
    mapping_lr_mul: float = 0.01
    channels: tuple[int, ...] = (256, 256, 128, 64, 32)
    d_channels: tuple[int, ...] | None = None
    img_channels: int = 3
    mbstd_group: int = 4
    mbstd_channels: int = 1
    conv_clamp: float | None = 256.0
    w_avg_beta: float = 0.995
    noise_seed: int = 0

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        if self.d_channels is not None:
            self.d_channels = tuple(int(c) for c in self.d_channels)
        r = self.resolution
        if not isinstance(r, int) or r < 8 or r > 1024 or r & (r - 1):
            raise UserError(f"resolution must be a power of two between 8 and 1024, got {r!r}")
        n = self.num_blocks
        for name in ("channels", "d_channels"):
            chans = getattr(self, name)
            if chans is None:
                continue
            if len(chans) != n or min(chans) < 1:
                raise UserError(f"{name} needs {n} positive widths (resolutions 4..{r}), got {chans}")
        for name in ("z_dim", "w_dim", "mapping_layers", "img_channels", "mbstd_group", "mbstd_channels"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.disc_channels()[0] % self.mbstd_channels:
            raise UserError("mbstd_channels must divide the 4x4 discriminator width")

    @property
    def num_blocks(self) -> int:
        return int(math.log2(self.resolution)) - 1

    @property
    def resolutions(self) -> tuple[int, ...]:
        return tuple(4 * 2**i for i in range(self.num_blocks))

    @property
    def num_ws(self) -> int:
        return 2 * self.num_blocks

    def disc_channels(self) -> tuple[int, ...]:
        return self.d_channels if self.d_channels is not None else self.channels


# --------------------------------------------------------------------------- layers


class HookedLayer(nn.Module):
    """A layer whose forward reads its weights only via effective_weight()/effective_bias()."""

    weight: nn.Parameter
    bias: nn.Parameter | None

    def _init_hook(self, weight_gain: float, bias_gain: float = 1.0) -> None:
        self.weight_gain = float(weight_gain)
        self.bias_gain = float(bias_gain)
        self.weight_modulator = None  # callable(raw weight) -> same-shaped weight, or None

    def effective_weight(self) -> torch.Tensor:
        w = self.weight
        mod = self.weight_modulator
        if mod is not None:
            w = mod(w)
        return w * self.weight_gain

    def effective_bias(self) -> torch.Tensor | None:
        if self.bias is None:
            return None
        return self.bias * self.bias_gain if self.bias_gain != 1.0 else self.bias


def _act(x: torch.Tensor, activation: str | None, gain: float = 1.0, clamp: float | None = None) -> torch.Tensor:
    if activation == "lrelu":
        x = F.leaky_relu(x, 0.2)
        gain = gain * SQRT2
    elif activation is not None:
        raise ValueError(f"unknown activation {activation!r}")
    if gain != 1.0:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


class EqualLinear(HookedLayer):
    """Fully connected layer with equalized learning rate (weight [out, in])."""

    def __init__(self, in_features, out_features, bias=True, bias_init=0.0, lr_mul=1.0, activation=None):
        super().__init__()
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init) / lr_mul)) if bias else None
        self._init_hook(lr_mul / math.sqrt(in_features), lr_mul)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.effective_weight().to(x.dtype)
        b = self.effective_bias()
        x = F.linear(x, w, None if b is None else b.to(x.dtype))
        return _act(x, self.activation)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, activation={self.activation}"


class EqualConv2d(HookedLayer):
    """Plain conv with equalized learning rate (weight [out, in, k, k]); optional 2x average-pool down first."""

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation="lrelu", down=False,
                 conv_clamp=None):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.activation, self.down, self.conv_clamp = activation, down, conv_clamp
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self._init_hook(1.0 / math.sqrt(in_channels * kernel_size * kernel_size))

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        if self.down:
            x = F.avg_pool2d(x, 2)
        x = F.conv2d(x, self.effective_weight(), self.effective_bias(), padding=self.kernel_size // 2)
        return _act(x, self.activation, gain, self.conv_clamp)

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, k={self.kernel_size}, down={self.down}"


class ModulatedConv2d(HookedLayer):
    """StyleGAN2 modulated conv: style affine, (de)modulation, optional 2x upsample, noise, bias, activation.

    Holds `weight` [out, in, k, k], `bias` [out] and the style affine `affine` (an EqualLinear,
    bias init 1). With `use_noise`: buffer `noise_const` [res, res] and parameter `noise_strength`.
    """

    def __init__(self, in_channels, out_channels, kernel_size, w_dim, resolution, demodulate=True, up=False,
                 use_noise=True, activation="lrelu", conv_clamp=None, noise_generator=None):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.resolution, self.demodulate, self.up = resolution, demodulate, up
        self.use_noise, self.activation, self.conv_clamp = use_noise, activation, conv_clamp
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self._init_hook(1.0 / math.sqrt(in_channels * kernel_size * kernel_size))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution, generator=noise_generator))
            self.noise_strength = nn.Parameter(torch.zeros([]))

    def styles(self, w: torch.Tensor) -> torch.Tensor:
        """Per-sample input-channel scales [N, in] (fp32, outside autocast)."""
        with torch.autocast(w.device.type, enabled=False):
            return self.affine(w.float())

    def demod_coefficients(self, styles: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """[N, out]: 1 / ||weight * style||_2 over (in, k, k) for each sample and output channel (fp32)."""
        weight = self.effective_weight() if weight is None else weight
        with torch.autocast(styles.device.type, enabled=False):
            w2 = weight.float().square().sum(dim=(2, 3))  # [out, in]
            return torch.rsqrt(styles.float().square() @ w2.t() + 1e-8)

    def modulated_weight(self, styles: torch.Tensor) -> torch.Tensor:
        """The per-sample weights [N, out, in, k, k] of the grouped-conv path (demodulated if enabled)."""
        weight = self.effective_weight().float()
        wm = weight.unsqueeze(0) * styles.float()[:, None, :, None, None]
        if self.demodulate:
            wm = wm * self.demod_coefficients(styles, weight)[:, :, None, None, None]
        return wm

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const", fused: bool = False,
                gain: float = 1.0) -> torch.Tensor:
        n = x.shape[0]
        styles = self.styles(w)
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        pad = self.kernel_size // 2
        if fused:
            wm = self.modulated_weight(styles)
            h, wd = x.shape[2], x.shape[3]
            wm = wm.reshape(n * self.out_channels, self.in_channels, self.kernel_size, self.kernel_size)
            x = F.conv2d(x.reshape(1, n * self.in_channels, h, wd), wm, padding=pad, groups=n)
            x = x.reshape(n, self.out_channels, h, wd)
        else:
            weight = self.effective_weight()
            x = x * styles.to(x.dtype)[:, :, None, None]
            x = F.conv2d(x, weight, padding=pad)
            if self.demodulate:
                x = x * self.demod_coefficients(styles, weight).to(x.dtype)[:, :, None, None]
        if self.use_noise and noise_mode != "none":
            if noise_mode == "random":
                noise = torch.randn(n, 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
            elif noise_mode == "const":
                noise = self.noise_const.to(x.dtype)
            else:
                raise ValueError(f"noise_mode must be 'const', 'random' or 'none', got {noise_mode!r}")
            x = x + noise * self.noise_strength.to(x.dtype)
        x = x + self.effective_bias().to(x.dtype)[None, :, None, None]
        return _act(x, self.activation, gain, self.conv_clamp)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, k={self.kernel_size}, res={self.resolution}, "
                f"up={self.up}, demodulate={self.demodulate}")


# --------------------------------------------------------------------------- generator


class MappingNetwork(nn.Module):
    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.w_avg_beta = cfg.z_dim, cfg.w_dim, cfg.num_ws, cfg.w_avg_beta
        dims = [cfg.z_dim] + [cfg.w_dim] * cfg.mapping_layers
        self.fcs = nn.ModuleList(
            EqualLinear(dims[i], dims[i + 1], lr_mul=cfg.mapping_lr_mul, activation="lrelu")
            for i in range(cfg.mapping_layers)
        )
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def forward(self, z, truncation_psi=1.0, truncation_cutoff=None, update_emas=False) -> torch.Tensor:
        """z [N, z_dim] -> ws [N, num_ws, w_dim] (fp32)."""
        with torch.autocast(z.device.type, enabled=False):
            x = z.float()
            x = x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)
            for fc in self.fcs:
                x = fc(x)
            if update_emas:
                with torch.no_grad():
                    self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
            ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)
            if truncation_psi != 1:
                cut = self.num_ws if truncation_cutoff is None else int(truncation_cutoff)
                ws[:, :cut] = self.w_avg.lerp(ws[:, :cut], truncation_psi)
        return ws


class SynthesisBlock(nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, conv_clamp, noise_generator):
        super().__init__()
        self.is_first = in_channels == 0
        self.resolution = resolution
        if self.is_first:
            self.const = nn.Parameter(torch.randn(out_channels, 4, 4))
        else:
            self.conv0 = ModulatedConv2d(in_channels, out_channels, 3, w_dim, resolution, up=True,
                                         conv_clamp=conv_clamp, noise_generator=noise_generator)
        self.conv1 = ModulatedConv2d(out_channels, out_channels, 3, w_dim, resolution,
                                     conv_clamp=conv_clamp, noise_generator=noise_generator)
        self.torgb = ModulatedConv2d(out_channels, img_channels, 1, w_dim, resolution, demodulate=False,
                                     use_noise=False, activation=None, conv_clamp=conv_clamp)
        self.num_conv = 1 if self.is_first else 2

    def forward(self, x, img, ws, noise_mode="const", fused=False):
        """ws: [N, num_conv + 1, w_dim]. Returns (features, image in fp32)."""
        if self.is_first:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode, fused)
        x = self.conv1(x, ws[:, self.num_conv - 1], noise_mode, fused)
        y = self.torgb(x, ws[:, self.num_conv], fused=fused).float()
        if img is not None:
            img = F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False)
            y = img + y
        return x, y


class SynthesisNetwork(nn.Module):
    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.num_ws, self.w_dim, self.resolution = cfg.num_ws, cfg.w_dim, cfg.resolution
        gen = torch.Generator().manual_seed(int(cfg.noise_seed))
        blocks = []
        for i, res in enumerate(cfg.resolutions):
            in_ch = 0 if i == 0 else cfg.channels[i - 1]
            blocks.append(SynthesisBlock(in_ch, cfg.channels[i], cfg.w_dim, res, cfg.img_channels, cfg.conv_clamp,
                                         gen))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", fused: bool = False) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1] != self.num_ws:
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}")
        x = img = None
        w_idx = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, w_idx:w_idx + block.num_conv + 1], noise_mode, fused)
            w_idx += block.num_conv
        return img


class Generator(nn.Module):
    """z [N, z_dim] -> images [N, img_channels, R, R] in [-1, 1] (see module docstring)."""

    def __init__(self, config: GANConfig | None = None):
        super().__init__()
        self.config = config or GANConfig()
        self.z_dim, self.w_dim = self.config.z_dim, self.config.w_dim
        self.num_ws, self.resolution = self.config.num_ws, self.config.resolution
        self.img_channels = self.config.img_channels
        self.mapping = MappingNetwork(self.config)
        self.synthesis = SynthesisNetwork(self.config)

    def forward(self, z, truncation_psi=1.0, truncation_cutoff=None, noise_mode="const", clamp=None,
                fused_modconv=None, update_emas=False) -> torch.Tensor:
        ws = self.mapping(z, truncation_psi, truncation_cutoff, update_emas=update_emas)
        fused = (not self.training) if fused_modconv is None else fused_modconv
        img = self.synthesis(ws, noise_mode=noise_mode, fused=fused)
        if (not self.training) if clamp is None else clamp:
            img = img.clamp(-1.0, 1.0)
        return img

    def modulatable_layers(self) -> list[tuple[str, HookedLayer]]:
        return modulatable_layers(self)


# --------------------------------------------------------------------------- discriminator


def minibatch_std(x: torch.Tensor, group_size: int, num_channels: int) -> torch.Tensor:
    n, c, h, w = x.shape
    g = max(d for d in range(1, min(group_size, n) + 1) if n % d == 0)
    f = num_channels
    y = x.float().reshape(g, -1, f, c // f, h, w)
    y = y - y.mean(dim=0)
    y = (y.square().mean(dim=0) + 1e-8).sqrt()
    y = y.mean(dim=(2, 3, 4)).reshape(-1, f, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y.to(x.dtype)], dim=1)


class DiscriminatorBlock(nn.Module):
    """Residual: (skip(x) + conv1(conv0(x))) * sqrt(1/2), both branches downsampled 2x."""

    def __init__(self, in_channels, out_channels, conv_clamp):
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3, conv_clamp=conv_clamp)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, down=True, conv_clamp=conv_clamp)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, activation=None, down=True)

    def forward(self, x):
        y = self.skip(x, gain=SQRT_HALF)
        x = self.conv1(self.conv0(x), gain=SQRT_HALF)
        return y + x


class Discriminator(nn.Module):
    """images [N, img_channels, R, R] -> logits [N] (fp32)."""

    def __init__(self, config: GANConfig | None = None):
        super().__init__()
        cfg = self.config = config or GANConfig()
        ch = cfg.disc_channels()
        self.resolution = cfg.resolution
        self.mbstd_group, self.mbstd_channels = cfg.mbstd_group, cfg.mbstd_channels
        self.fromrgb = EqualConv2d(cfg.img_channels, ch[-1], 1, conv_clamp=cfg.conv_clamp)
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(ch[i], ch[i - 1], cfg.conv_clamp) for i in range(cfg.num_blocks - 1, 0, -1)
        )
        self.conv = EqualConv2d(ch[0] + cfg.mbstd_channels, ch[0], 3, conv_clamp=cfg.conv_clamp)
        self.fc = EqualLinear(ch[0] * 16, ch[0], activation="lrelu")
        self.out = EqualLinear(ch[0], 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.fromrgb(img)
        for block in self.blocks:
            x = block(x)
        x = minibatch_std(x, self.mbstd_group, self.mbstd_channels)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        return self.out(x).float().squeeze(1)


# --------------------------------------------------------------------------- helpers


def widen_generator(old: Generator, config: GANConfig) -> Generator:
    """A wider generator (`config.channels` ≥ the old widths, all else equal) that draws what `old` draws.

    Function-preserving widening (the zero fan-in variant of Net2Net's wider operator): every
    tensor of `old` goes into the leading block of the new one; a weight's new input columns are
    zero for the old output rows, so old channels never read new ones (and demodulation, a norm
    over the input columns, is unchanged), and the old block is rescaled by the ratio of the
    equalized-lr gains (1/sqrt(fan-in) shrinks as the width grows); the new rows keep their fresh
    initialisation (new channels, style-affine rows, const channels). New channels reach the
    image only once the old rows' zero columns have learnt, so training continues from `old`'s
    samples. The new parts are random: seed torch first for a reproducible result.
    """
    _check_widening(old.config, config, tuple(old.config.channels), tuple(config.channels), "channels")
    return _widened(old, Generator(config))


def widen_discriminator(old: Discriminator, config: GANConfig) -> Discriminator:
    """A wider discriminator (`config.disc_channels()` ≥ the old widths) with the same logits as `old`.

    The zero fan-in widening of `widen_generator`. The 4 px width stays: the minibatch-std channel
    is appended after it, so growing it would move that channel's input column.
    """
    old_ch, new_ch = tuple(old.config.disc_channels()), tuple(config.disc_channels())
    _check_widening(old.config, config, old_ch, new_ch, "d_channels")
    if new_ch[0] != old_ch[0]:
        raise UserError(f"widening a discriminator keeps its 4 px width {old_ch[0]} (the minibatch-std input), "
                        f"got {new_ch[0]}")
    return _widened(old, Discriminator(config))


def _check_widening(ocfg: GANConfig, config: GANConfig, old_widths: tuple, new_widths: tuple, what: str) -> None:
    for name in ("resolution", "z_dim", "w_dim", "mapping_layers", "img_channels", "mbstd_channels"):
        if getattr(ocfg, name) != getattr(config, name):
            raise UserError(f"widening keeps {name}: the old network has {getattr(ocfg, name)}, "
                            f"the new config {getattr(config, name)}")
    if any(n < o for n, o in zip(new_widths, old_widths)):
        raise UserError(f"widening only grows the widths ({what}): {old_widths} -> {new_widths}")


def _widened(old: nn.Module, new: nn.Module) -> nn.Module:
    """`new` (the layers of `old`, each at least as wide) holding `old` in its leading blocks."""
    old_state = old.state_dict()
    # equalized lr: a weight's gain is 1/sqrt(fan-in), so old blocks are rescaled to keep their effective value
    gain_ratio = {name + ".weight": old.get_submodule(name).weight_gain / layer.weight_gain
                  for name, layer in new.named_modules() if isinstance(layer, HookedLayer)}
    widened = {}
    for key, t in new.state_dict().items():
        o = old_state[key].to(t.dtype) * gain_ratio.get(key, 1.0)
        if o.shape == t.shape:
            widened[key] = o
            continue
        if o.ndim != t.ndim or o.shape[2:] != t.shape[2:] or o.shape[0] > t.shape[0] or (
                o.ndim > 1 and o.shape[1] > t.shape[1]):
            raise ValueError(f"cannot widen {key}: {tuple(o.shape)} -> {tuple(t.shape)}")
        w = t.clone()  # the new rows keep their fresh initialisation
        w[tuple(slice(0, d) for d in o.shape)] = o
        if o.ndim > 1:
            w[:o.shape[0], o.shape[1]:] = 0.0
        widened[key] = w
    new.load_state_dict(widened)
    return new


def modulatable_layers(module: nn.Module) -> list[tuple[str, HookedLayer]]:
    """(name, layer) for every conv/FC layer of `module` that exposes the weight hook."""
    return [(name, m) for name, m in module.named_modules() if isinstance(m, HookedLayer)]


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def seeded_z(n: int, z_dim: int, seed: int, device="cpu") -> torch.Tensor:
    """n latent vectors drawn on the CPU from `seed` (the same on every device)."""
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(int(seed))).to(device)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> uint8 [N, H, W, C]."""
    x = (images.detach().float().clamp(-1, 1) + 1) * 127.5
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def image_grid(images: torch.Tensor, nrow: int = 8):
    """A PIL image tiling [N, C, H, W] images (in [-1, 1]) nrow per row."""
    from PIL import Image

    arr = to_uint8(images)
    n, h, w, c = arr.shape
    rows = math.ceil(n / nrow)
    grid = np.zeros((rows * h, nrow * w, c), dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[r * h:(r + 1) * h, col * w:(col + 1) * w] = arr[i]
    return Image.fromarray(grid if c != 1 else grid[..., 0])


# --------------------------------------------------------------------------- save / load


def _config_of(module: nn.Module, cfg: GANConfig | None) -> GANConfig:
    cfg = cfg if cfg is not None else getattr(module, "config", None)
    if not isinstance(cfg, GANConfig):
        raise ValueError("a GANConfig is needed to save this network")
    return cfg


def state_tensors(module: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors (what safetensors stores)."""
    return {prefix + k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}


def write_config(cfg: GANConfig, folder) -> Path:
    path = Path(folder) / CONFIG_FILE
    atomic_write_json(path, {"format": FORMAT, "format_version": FORMAT_VERSION, "config": cfg.to_dict()}, sort_keys=True)
    return path


def read_config(folder) -> GANConfig:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {folder} is not a gan-mini folder")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err})") from None
    if data.get("format") != FORMAT or "config" not in data:
        raise UserError(f"{path} is not a gan-mini config (format {data.get('format')!r})")
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"{path} has format version {data['format_version']}; this code reads up to {FORMAT_VERSION}")
    return GANConfig.from_dict(data["config"])


def _save_network(module, cfg, folder, file_name, kind) -> Path:
    cfg = _config_of(module, cfg)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name
    atomic_save_tensors(state_tensors(module), path,
                         {"format": FORMAT, "kind": kind, "config": json.dumps(cfg.to_dict(), sort_keys=True)})
    write_config(cfg, folder)
    return path


def _load_network(cls, folder, file_name, device):
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg = read_config(folder)
    path = folder / file_name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    net = cls(cfg)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as err:
        raise UserError(f"{path} is not a readable safetensors file ({err})") from None
    missing = sorted(set(net.state_dict()) - set(state))
    unexpected = sorted(set(state) - set(net.state_dict()))
    if missing or unexpected:
        raise UserError(f"{path} does not match its config.json (missing {missing[:3]}, unexpected {unexpected[:3]})")
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise UserError(f"{path} does not match its config.json: {str(err).splitlines()[-1].strip()}") from None
    return net.to(device).eval().requires_grad_(False)


def save_generator(G: Generator, cfg: GANConfig | None, folder) -> Path:
    """Write folder/generator.safetensors (all parameters and buffers) and folder/config.json."""
    return _save_network(G, cfg, folder, GENERATOR_FILE, "generator")


def load_generator(folder, device="cpu") -> Generator:
    """The generator saved in `folder` (safetensors only), in eval mode with requires_grad off; `.config` holds its GANConfig."""
    return _load_network(Generator, folder, GENERATOR_FILE, device)


def save_discriminator(D: Discriminator, cfg: GANConfig | None, folder) -> Path:
    """Write folder/discriminator.safetensors and folder/config.json."""
    return _save_network(D, cfg, folder, DISCRIMINATOR_FILE, "discriminator")


def load_discriminator(folder, device="cpu") -> Discriminator:
    return _load_network(Discriminator, folder, DISCRIMINATOR_FILE, device)
