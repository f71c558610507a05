"""What a base's autoencoder can carry: evaluators on fresh renderings before and after encode/decode.

    python bench/autoencoder_roundtrip.py BASE [BASE ...] [--n 40] [--seed 0] [--strengths 0.1,0.2] [--json F]

The museum and the synthetic fine-tune train in latent space, so a style the autoencoder cannot
reconstruct is one no UNet or LoRA can draw: the fraction of round-tripped styled images the style
evaluator still recognises is the ceiling of the forgetting benchmark's style accuracy. Per base:
plain kind / colour / background and the bird subclass after the round trip, and per reference
style the fraction recognised (the clean images are recognised at 1.0, assets/evaluators).
Every base sees the same images (world seeds from --seed), so the columns compare side by side.

--strengths goes one step further, to the UNet: each bird is noised to that fraction of the
schedule and denoised by the base with its own caption (SDEdit: img2img, 20 steps, guidance 5),
and the subclass evaluator reads the result. A fine-tune that starts from the base can only keep
a detail that survives this at small strengths; it is what bounds bench/synthetic.py.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from generators import diffusion, miniworld
from generators.evaluators import load_evaluator
from styles.reference import REFERENCE_STYLES, apply_style


@torch.no_grad()
def round_trip(vae, images: list[Image.Image], batch: int = 32) -> list[Image.Image]:
    """Encode to the posterior mean and decode (what training latents and sampling go through)."""
    out = []
    for i in range(0, len(images), batch):
        x = torch.stack([torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1) for im in images[i : i + batch]])
        x = x.float().div(127.5).sub(1).to(vae.device, vae.dtype)
        y = vae.decode(vae.encode(x).latent_dist.mean).sample.float().clamp(-1, 1)
        out += [Image.fromarray(a) for a in ((y + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()]
    return out


def subclass_accuracy(ev, images: list[Image.Image], birds) -> float:
    """The fraction of images whose predicted bird subclass is the rendered one's."""
    return float(np.mean([p == s.attributes.subclass for p, s in zip(ev.predict(images)["subclass"], birds)]))


@torch.no_grad()
def denoise(pipe, samples, strength: float, seed: int, batch: int = 20) -> list[Image.Image]:
    """SDEdit: each sample noised to `strength` of the schedule, denoised by the base with its own caption."""
    from diffusers import StableDiffusionImg2ImgPipeline

    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.set_progress_bar_config(disable=True)
    out = []
    for i in range(0, len(samples), batch):
        chunk = samples[i : i + batch]
        out += img2img(prompt=[s.attributes.caption for s in chunk], image=[s.image for s in chunk], strength=strength,
                       num_inference_steps=20, guidance_scale=5.0, generator=torch.Generator().manual_seed(seed + i)).images
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("bases", nargs="+")
    p.add_argument("--n", type=int, default=40, help="images per style (plain: 5x as many)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strengths", default="", help="comma-separated img2img strengths for the birds (e.g. 0.1,0.2,0.4)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    strengths = [float(x) for x in args.strengths.split(",") if x]

    ev = load_evaluator()
    plain = [miniworld.generate(args.seed, 90000 + i, size=64) for i in range(5 * args.n)]
    birds = [miniworld.generate(args.seed, 95000 + i, size=64, kinds=("bird",), scales=("medium", "large")) for i in range(args.n)]
    styled = {s: [apply_style(s, miniworld.generate(args.seed, 100000 + 1000 * k + i, size=64).image, seed=i)
                  for i in range(args.n)] for k, s in enumerate(REFERENCE_STYLES)}
    results = {}
    for base in args.bases:
        t0 = time.time()
        pipe = diffusion.load_base(base, "cpu", "fp32")
        vae = pipe.vae
        pred = ev.predict(round_trip(vae, [s.image for s in plain]))
        row = {h: float(np.mean([p == getattr(s.attributes, h) for p, s in zip(pred[h], plain)])) for h in ("kind", "color", "background")}
        row["subclass"] = subclass_accuracy(ev, round_trip(vae, [s.image for s in birds]), birds)
        row["styles"] = {s: float(np.mean([p == s for p in ev.predict(round_trip(vae, ims))["style"]])) for s, ims in styled.items()}
        row["styles_mean"] = float(np.mean(list(row["styles"].values())))
        row["subclass_after_denoise"] = {}
        for strength in strengths:
            row["subclass_after_denoise"][str(strength)] = subclass_accuracy(ev, denoise(pipe, birds, strength, args.seed), birds)
        row["seconds"] = round(time.time() - t0, 1)
        results[diffusion.base_name(base)] = row
        print(f"{diffusion.base_name(base)}: kind {row['kind']:.3f} colour {row['color']:.3f} background {row['background']:.3f} "
              f"subclass {row['subclass']:.3f}; styles mean {row['styles_mean']:.3f}: "
              + ", ".join(f"{s} {v:.2f}" for s, v in row["styles"].items())
              + "".join(f"; subclass after denoising from {k}: {v:.3f}" for k, v in row["subclass_after_denoise"].items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"n": args.n, "seed": args.seed, "strengths": strengths, "bases": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
