"""gan-mini's weight layers: equalized-lr FC and conv layers and the StyleGAN2 modulated conv.

StyleGAN2 (Karras et al., CVPR 2020, §2.2): `ModulatedConv2d` scales the input channels of its
weight by a per-sample style, w'_ijk = s_i · w_ijk (Eq. 1), and demodulates each output channel,
w''_ijk = w'_ijk / sqrt(Σ_{i,k} w'_ijk² + ε) (Eq. 3). It has two exact, interchangeable paths:
the grouped-convolution trick (`fused=True`: one conv with per-sample modulated+demodulated
weights, groups=N) and the activation-scaling path (`fused=False`: x * style -> shared conv ->
* demod, faster for training at large batch). All layers use the equalized learning rate: the
stored weight is N(0, 1) and scaled by 1/sqrt(fan-in) at run time.

Weight hook (for the LeFT modulators of LFS-GAN, `generators.gan.left`)
-----------------------------------------------------------------------
Every conv and FC layer that holds a weight (`EqualLinear`: mapping FCs and style affines;
`ModulatedConv2d`: synthesis convs and toRGB; `EqualConv2d`: discriminator convs) derives
from `HookedLayer`. It stores its weight as the nn.Parameter `weight` (and `bias`), and its
forward reads them ONLY through two methods:

    layer.effective_weight()  ->  modulator(weight) * weight_gain   (modulator: identity by default)
    layer.effective_bias()    ->  bias * bias_gain                  (None when the layer has no bias)

`weight` is the raw stored parameter (the runtime scale `weight_gain` is applied after the
modulator). To modulate a layer either
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

import math

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)


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


def _activate(x: torch.Tensor, activation: str | None, gain: float = 1.0, clamp: float | None = None) -> torch.Tensor:
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
        return _activate(x, self.activation)

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
        return _activate(x, self.activation, gain, self.conv_clamp)

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
        return _activate(x, self.activation, gain, self.conv_clamp)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, k={self.kernel_size}, res={self.resolution}, "
                f"up={self.up}, demodulate={self.demodulate}")


def modulatable_layers(module: nn.Module) -> list[tuple[str, HookedLayer]]:
    """(name, layer) for every conv/FC layer of `module` that exposes the weight hook."""
    return [(name, m) for name, m in module.named_modules() if isinstance(m, HookedLayer)]
