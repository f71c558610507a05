"""Sampling a gan-mini generator: seeded latents, images as uint8 / PIL / a grid, and the preview set.

Latents are drawn on the CPU from their own `torch.Generator` (`seeded_z`), so the same seed
gives the same images on every device and sampling never touches the global RNG a training
loop draws from. `preview_images` is what the engines hand to `run.preview` (generators/run.py)
while they train: the first PREVIEW_N latents of PREVIEW_SEED, constant noise.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from generators.errors import UserError

PREVIEW_N = 8
PREVIEW_SEED = 0


def seeded_z(n: int, z_dim: int, seed: int, device="cpu") -> torch.Tensor:
    """n latent vectors drawn on the CPU from `seed` (the same on every device)."""
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(int(seed))).to(device)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> uint8 [N, H, W, C]."""
    x = (images.detach().float().clamp(-1, 1) + 1) * 127.5
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def to_pil(images: torch.Tensor) -> list:
    """[N, 3, H, W] in [-1, 1] -> N RGB PIL images (quantized to 8 bits, like the renderings they are compared with)."""
    from PIL import Image

    return [Image.fromarray(a) for a in to_uint8(images)]


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


@torch.no_grad()
def generate(G: nn.Module, n: int, seed: int, truncation_psi: float = 1.0, batch: int = 64) -> torch.Tensor:
    """n images [n, 3, R, R] in [-1, 1] from seeded latents (constant noise): the same seed, the same images.

    Puts G in eval mode (fused modulated convs, clamped output)."""
    if n < 1:
        raise UserError(f"the number of samples must be at least 1, got {n}")
    dev = next(G.parameters()).device
    z = seeded_z(n, G.z_dim, seed, dev)
    G.eval()
    out = [G(z[i:i + batch], truncation_psi=truncation_psi, noise_mode="const").cpu() for i in range(0, n, batch)]
    return torch.cat(out)


@torch.no_grad()
def preview_images(G: nn.Module, caption: str) -> tuple[list, list[str]]:
    """(images, captions) for `run.preview`: G as it is (training or not; its mode is left alone),
    PREVIEW_N latents of PREVIEW_SEED, constant noise, clamped, each captioned `caption`. Uses no
    global RNG, so a run with previews trains exactly as one without."""
    dev = next(G.parameters()).device
    images = G(seeded_z(PREVIEW_N, G.z_dim, PREVIEW_SEED, dev), noise_mode="const", clamp=True)
    return to_pil(images), [caption] * PREVIEW_N
