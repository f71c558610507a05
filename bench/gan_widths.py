"""Per-task LeFT storage and LeFT step cost of gan-mini at several generator widths, side by side.

    python bench/gan_widths.py [--reps 10]

For each width list: generator parameters, LeFT parameters at rank 1 (+ the task's w average) as a
percentage of the generator, and the median time of a batch-4 LeFT forward + backward through G
and a half-width D (what a few-shot task step costs), as a ratio to the first width list. The
widths are timed interleaved, one thread, so machine noise falls on all of them alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generators.gan.left import LeFTConfig, attach_left, count_left_parameters  # noqa: E402
from generators.gan.stylegan2 import Discriminator, GANConfig, Generator  # noqa: E402

WIDTHS = [(128, 128, 64, 32, 16), (256, 256, 64, 32, 16), (256, 256, 128, 32, 16), (256, 256, 128, 64, 32)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=10, help="timed passes per width (default 10)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    nets = {}
    for ch in WIDTHS:
        cfg = GANConfig(channels=ch, d_channels=WIDTHS[0])
        G, D = Generator(cfg).requires_grad_(False), Discriminator(cfg).requires_grad_(False)
        n_params = sum(p.numel() for p in G.parameters())
        attach_left(G, LeFTConfig(rank=1))
        nets[ch] = (G, D, n_params, count_left_parameters(G) + cfg.w_dim)
    times = {ch: [] for ch in WIDTHS}
    z = torch.randn(4, GANConfig().z_dim)
    for _ in range(args.reps):
        for ch, (G, D, _, _) in nets.items():
            start = time.perf_counter()
            D(G(z)).mean().backward()
            times[ch].append(time.perf_counter() - start)
    ref = statistics.median(times[WIDTHS[0]])
    print("channels | G params | stored per task | % of G | LeFT step (median) | ratio")
    for ch, (_, _, n_params, stored) in nets.items():
        med = statistics.median(times[ch])
        print(f"{','.join(map(str, ch))} | {n_params:,} | {stored:,} | {100 * stored / n_params:.2f} | {med:.3f} s | {med / ref:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
