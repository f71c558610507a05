"""gan-mini: a small StyleGAN2 (Karras et al., CVPR 2020) in pure PyTorch, no custom CUDA ops.

Generator: a mapping network (z -> w, equalized-lr FC layers with leaky ReLU * sqrt(2),
lr multiplier 0.01) and a synthesis network from a learned 4x4 constant up to
`config.resolution`, made of modulated 3x3 convolutions with demodulation
(`generators.gan.layers`), per-layer noise inputs with learned strength, per-layer style
affines, and toRGB skip connections (bilinear upsampling, `torch.nn.functional.interpolate`).
`w_avg` is tracked for the truncation trick. Discriminator: residual blocks, minibatch standard
deviation, about the same size as the generator. `GANConfig` is the architecture, saved beside
every weights file (`generators.gan.folder`).

    G = Generator(GANConfig())
    images = G(z, truncation_psi=1.0, noise_mode="const")   # [N, 3, R, R]

In eval mode `G(z)` returns images clamped to [-1, 1]; in train mode it returns the raw
output (pass `clamp=True/False` to choose). With noise_mode="const" (the default) and a fixed
z the output is deterministic; "random" draws fresh noise, "none" leaves noise out. The
modulated convolutions run fused (grouped conv) by default in eval mode, unfused in train mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from generators.config import SavedConfig
from generators.errors import UserError
from generators.gan.layers import EqualConv2d, EqualLinear, ModulatedConv2d

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

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", fused: bool = False,
                return_features: bool = False):
        """ws [N, num_ws, w_dim] -> image [N, C, R, R] (fp32); with return_features, (image, [F^1, ..., F^L]):
        every block's output features as well (what LFS-GAN's mode-seeking loss compares, docs/methods.md §2.2)."""
        if ws.ndim != 3 or ws.shape[1] != self.num_ws:
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}")
        x = img = None
        features = []
        w_idx = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, w_idx:w_idx + block.num_conv + 1], noise_mode, fused)
            w_idx += block.num_conv
            if return_features:
                features.append(x)
        return (img, features) if return_features else img


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


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
