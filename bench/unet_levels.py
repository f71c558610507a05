"""The cost of a studio-mini UNet training step for each latent and level layout, side by side.

    OMP_NUM_THREADS=1 python bench/unet_levels.py [--batch 32] [--repeats 3]

One step = forward, backward and AdamW on random latents and prompt states (build_unet's UNet,
pooled prompt included), one thread; the median of --repeats after one warm-up. Ratios are to the
committed 16 x 16 layout, measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from generators.sd_mini.config import MiniBaseConfig  # noqa: E402
from generators.sd_mini.models import build_unet  # noqa: E402

LAYOUTS = {
    "committed, 16x16": {},
    "same UNet, 32x32": {"vae_channels": (16, 32)},
    "conv-only level in front, 32x32": {"vae_channels": (16, 32), "unet_channels": (32, 32, 64, 128),
                                        "unet_attention": (False, True, True, False)},
}


def step_seconds(cfg: MiniBaseConfig, batch: int, repeats: int) -> tuple[float, int]:
    unet = build_unet(cfg)
    opt = torch.optim.AdamW(unet.parameters(), 1e-4)
    size = cfg.resolution // 2 ** (len(cfg.vae_channels) - 1)
    x, text = torch.randn(batch, cfg.latent_channels, size, size), torch.randn(batch, cfg.max_length, cfg.text_width)
    t = torch.randint(0, 1000, (batch,))
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        out = unet(x, t, encoder_hidden_states=text, added_cond_kwargs={"text_embeds": text}).sample
        out.pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]), sum(p.numel() for p in unet.parameters())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    base = None
    print("| layout | parameters | s / step | x committed |\n|---|---|---|---|")
    for name, overrides in LAYOUTS.items():
        seconds, params = step_seconds(replace(MiniBaseConfig(), **overrides), args.batch, args.repeats)
        base = base or seconds
        print(f"| {name} | {params / 1e6:.2f} M | {seconds:.2f} | {seconds / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
