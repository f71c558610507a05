"""Benchmark: studio-mini 2's style family, measured three ways.

    python bench/style_family.py disjoint --json runs/family-disjoint.json
    python bench/style_family.py read-back --base runs/mini2 --n 200 --json runs/family-readback.json
    python bench/style_family.py round-trip --base assets/studio-mini-2 --json runs/family-roundtrip.json
    python bench/style_family.py finish --base assets/studio-mini-2 --json runs/family-finish.json

`disjoint`: the committed style evaluator reads N fresh family renderings (mini-world images with
one to three components); the share it labels as each of the forgetting benchmark's five styles
must stay at most 0.10, or the museum's benchmark would measure what pretraining already taught.

`read-back`: a base draws N prompts that end in component words (held-out content captions with or
without the colour word, then one to three components); the family head (assets/family-head)
reads which components each image carries. Reported: the share of named components found
(milestone: at least 0.80), the share of images with every named component, components found
that were not named, and the main evaluator's kind and background accuracy on the same images
(content kept under style words). The same prompts without their style words give the head's
false-positive floor on this base.

`round-trip`: the family head on fresh renderings at the base's resolution, clean and after the
base's autoencoder (encode to the posterior mean, decode): a component the autoencoder cannot
carry, no UNet can learn.

`finish`: where in the denoising a component is lost. Mini-world images at the base's resolution,
each given one component, go through img2img (the base's own pipeline, the caption ending in the
component's word) at several strengths: "keep" starts from the rendering with the component, "add"
from the same image without it. Reported: the share the head still (or newly) finds the
component in. A component kept at low strength but not added at high strength is laid out wrong
at the noisy steps; one lost even at low strength, the steps that finish the image do not draw it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generators import diffusion, miniworld  # noqa: E402
from generators.evaluators import load_evaluator  # noqa: E402
from generators.sd_mini import family_head  # noqa: E402
from generators.sd_mini import style_family as sf  # noqa: E402
from generators.sd_mini.evaluate import held_out_prompts, prompt_for  # noqa: E402

BENCHMARK_STYLES = ("pixel_art", "watercolor", "neon_glow", "flat_outline", "blueprint")  # bench/forgetting.py


def head_label(head_folder) -> str:
    """The family head a result was read with, for its JSON."""
    return str(head_folder or "assets/family-head")


def disjoint(n: int, seed: int) -> dict:
    evaluator = load_evaluator()
    images, names = [], []
    for i in range(n):
        rng = np.random.default_rng([seed, i, 3])
        sample = miniworld.generate(seed, i, size=64, held_out=False, with_mask=True)
        components = sf.sample_components(rng)
        images.append(sf.apply_components(sample.image, components, rng, sample.mask))
        names.append(components)
    predicted = evaluator.predict(images)["style"]
    share = {s: sum(p == s for p in predicted) / n for s in BENCHMARK_STYLES}
    by_component = {c: Counter(p for p, ns in zip(predicted, names) if c in ns).most_common(1)[0]
                    for c in sf.COMPONENT_NAMES}
    return {"n": n, "seed": seed, "share_labelled_as": share, "max_share": max(share.values()),
            "plain_share": sum(p == "plain" for p in predicted) / n,
            "most_common_label_per_component": {c: list(v) for c, v in by_component.items()}}


def read_back(base, n: int, seed: int, steps: int, guidance: float, device: str, head_folder=None) -> dict:
    pipe = diffusion.load_base(base, device)
    size = diffusion.base_resolution(pipe)
    head, evaluator = family_head.load(head_folder), load_evaluator(device=str(pipe.device))
    attrs = held_out_prompts(n, seed)
    rows = []
    for i, a in enumerate(attrs):
        rng = np.random.default_rng([seed, i, 5])
        form = "no-colour" if i % 2 else "caption"
        rows.append((a, prompt_for(a, form), sf.sample_components(rng)))
    result = {"base": diffusion.base_name(base), "n": n, "seed": seed, "steps": steps, "guidance": guidance,
              "head": head_label(head_folder)}
    start = time.time()
    for label, with_words in (("styled", True), ("unstyled", False)):
        settings = [diffusion.GenerationSettings(prompt=f"{p}, {', '.join(c)}" if with_words else p,
                                                 seed=seed * 100_000 + i, steps=steps, guidance=guidance,
                                                 width=size, height=size, base=result["base"])
                    for i, (_, p, c) in enumerate(rows)]
        images = diffusion.generate(pipe, settings)
        found = head.predict(images)
        content = evaluator.predict(images)
        named = [(c, family_head.components_found(found, i)) for i, (_, _, c) in enumerate(rows)]
        total = sum(len(c) for c, _ in named)
        result[label] = {
            "named_found": sum(len(set(c) & f) for c, f in named) / total,
            "all_named_found": float(np.mean([set(c) <= f for c, f in named])),
            "unnamed_found_per_image": float(np.mean([len(f - set(c)) for c, f in named])),
            "kind_accuracy": float(np.mean([k == a.kind for k, (a, _, _) in zip(content["kind"], rows)])),
            "background_accuracy": float(np.mean([b == a.background for b, (a, _, _) in zip(content["background"], rows)])),
            "per_component_found": {name: float(np.mean([name in f for c, f in named if name in c]))
                                    for name in sf.COMPONENT_NAMES if any(name in c for c, _ in named)},
        }
    result["seconds"] = round(time.time() - start, 1)
    return result


def round_trip_accuracy(base, n: int, seed: int, device: str, head_folder=None) -> dict:
    import torch
    from PIL import Image

    pipe = diffusion.load_base(base, device)
    size = diffusion.base_resolution(pipe)
    head = family_head.load(head_folder)
    rows = [family_head.render(family_head.EVAL_SEED + seed, i, size=size) for i in range(n)]
    clean = [Image.fromarray(a) for a, _ in rows]
    x = torch.from_numpy(np.stack([a for a, _ in rows])).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    with torch.no_grad():
        out = torch.cat([pipe.vae.decode(pipe.vae.encode(x[i:i + 64].to(pipe.device)).latent_dist.mean).sample
                         for i in range(0, n, 64)])
    decoded = [Image.fromarray(a) for a in ((out.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()]
    result = {"base": diffusion.base_name(base), "n": n, "seed": seed, "size": size,
              "head": head_label(head_folder)}
    for label, images in (("clean", clean), ("round_trip", decoded)):
        found = head.predict(images)
        named = [(set(c), family_head.components_found(found, i)) for i, (_, c) in enumerate(rows)]
        result[label] = {
            "exact": float(np.mean([c == f for c, f in named])),
            "named_found": sum(len(c & f) for c, f in named) / max(1, sum(len(c) for c, _ in named)),
            "per_component_found": {name: float(np.mean([name in f for c, f in named if name in c]))
                                    for name in sf.COMPONENT_NAMES if any(name in c for c, _ in named)},
        }
    return result


def finish(base, components, n: int, strengths, seed: int, steps: int, guidance: float, device: str,
           head_folder=None) -> dict:
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = diffusion.load_base(base, device)
    size = diffusion.base_resolution(pipe)
    img2img = StableDiffusionImg2ImgPipeline.from_pipe(pipe)
    img2img.set_progress_bar_config(disable=True)
    head = family_head.load(head_folder)
    result = {"base": diffusion.base_name(base), "n": n, "seed": seed, "size": size, "steps": steps,
              "guidance": guidance, "head": head_label(head_folder), "components": {}}

    def share_found(images, name):
        found = head.predict(images)
        return float(np.mean([name in family_head.components_found(found, i) for i in range(len(images))]))

    for c_index, name in enumerate(components):
        plain, styled, prompts = [], [], []
        for i in range(n):
            sample = miniworld.generate(seed, 10_000 * c_index + i, size=size, held_out=False, with_mask=True)
            rng = np.random.default_rng([seed, c_index, i])
            plain.append(sample.image.convert("RGB"))
            styled.append(sf.apply_components(sample.image, (name,), rng, sample.mask).convert("RGB"))
            prompts.append(f"{sample.attributes.caption}, {name}")
        row = {"clean": share_found(styled, name)}
        for task, inputs in (("keep", styled), ("add", plain)):
            for strength in strengths:
                images = []
                for start in range(0, n, 16):
                    batch = slice(start, start + 16)
                    generators = [torch.Generator().manual_seed(seed * 100_000 + start + k) for k in range(len(prompts[batch]))]
                    images += img2img(prompt=prompts[batch], image=inputs[batch], strength=strength, num_inference_steps=steps,
                                      guidance_scale=guidance, generator=generators).images
                row[f"{task}@{strength}"] = share_found(images, name)
        result["components"][name] = row
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    d = sub.add_parser("disjoint")
    d.add_argument("--n", type=int, default=1000)
    d.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("read-back")
    r.add_argument("--base", default=None, help="pipeline folder (default: the default embedded base)")
    r.add_argument("--n", type=int, default=200)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--steps", type=int, default=25)
    r.add_argument("--guidance", type=float, default=5.0)
    r.add_argument("--device", default="auto")
    t = sub.add_parser("round-trip")
    t.add_argument("--base", default=None, help="pipeline folder (default: the default embedded base)")
    t.add_argument("--n", type=int, default=1000)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto")
    f = sub.add_parser("finish")
    f.add_argument("--base", default=None, help="pipeline folder (default: the default embedded base)")
    f.add_argument("--components", default="pixelated,dotted,posterized,grid lines",
                   help="comma-separated family components")
    f.add_argument("--strengths", default="0.2,0.4,0.7", help="comma-separated img2img strengths")
    f.add_argument("--n", type=int, default=32, help="images per component")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--steps", type=int, default=25)
    f.add_argument("--guidance", type=float, default=5.0)
    f.add_argument("--device", default="auto")
    for q in (r, t, f):
        q.add_argument("--head", type=Path, default=None, help="family head folder (default: assets/family-head)")
    for q in (d, r, t, f):
        q.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.what == "disjoint":
        result = disjoint(args.n, args.seed)
    elif args.what == "finish":
        names = [c.strip() for c in args.components.split(",") if c.strip()]
        unknown = sorted(set(names) - set(sf.COMPONENT_NAMES))
        if unknown:
            p.error(f"unknown components {unknown}; components: {', '.join(sf.COMPONENT_NAMES)}")
        try:
            strengths = [float(x) for x in args.strengths.split(",")]
        except ValueError:
            strengths = []
        if not strengths or not all(0 < x <= 1 for x in strengths):
            p.error(f"--strengths takes comma-separated numbers in (0, 1], got {args.strengths!r}")
        if any(int(args.steps * x) < 1 for x in strengths):  # img2img runs int(steps × strength) steps
            p.error(f"--steps {args.steps} gives no denoising step at strength {min(strengths)}; raise --steps")
        result = finish(args.base, names, args.n, strengths, args.seed, args.steps, args.guidance, args.device, args.head)
    elif args.what == "round-trip":
        result = round_trip_accuracy(args.base, args.n, args.seed, args.device, args.head)
    else:
        result = read_back(args.base, args.n, args.seed, args.steps, args.guidance, args.device, args.head)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
