"""One prompt per kind, the same seeds: does a base draw a different object for each kind word?

    python bench/kinds_grid.py BASE OUT.png

Rows are seeds 0 and 1; columns the kinds in `miniworld.KINDS` order, each prompted as "a red KIND on
the sky background, large, facing left, in the center" (20 steps, guidance 5, 2x nearest upscale).
Made docs/figures/base2-kinds.png and base3-kinds.png.
"""

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generators import diffusion, miniworld  # noqa: E402


def main(base: str, out: str) -> None:
    pipe = diffusion.load_base(base, "cpu", "fp32")
    grid = Image.new("RGB", (64 * len(miniworld.KINDS), 128))
    for row, seed in enumerate((0, 1)):
        for col, kind in enumerate(miniworld.KINDS):
            image = pipe(f"a red {kind} on the sky background, large, facing left, in the center", num_inference_steps=20,
                         guidance_scale=5.0, generator=torch.Generator().manual_seed(seed), height=64, width=64).images[0]
            grid.paste(image, (64 * col, 64 * row))
    grid.resize((grid.width * 2, grid.height * 2), Image.NEAREST).save(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("base", help="pipeline folder or embedded base name")
    parser.add_argument("out", help="PNG to write")
    args = parser.parse_args()
    main(args.base, args.out)
