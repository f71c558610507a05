"""Forgetting benchmark of the museum (issue 4): a sequence of reference styles, scored after each task.

For each method, styles are learnt one after another into a fresh museum; after task i every
style j <= i is sampled on fixed content prompts and seeds, and the style evaluator's accuracy
fills M[i, j]. Metrics (methods.md §1): Average = mean_i mean_{j<=i} M[i, j];
Forgetting = mean_{j<T} max_{i>j} (M[j, j] - M[i, j]); content accuracy = the kind evaluator
agreeing with the object asked for, on the final model's styled samples.

Methods: full (default MuseumConfig), naive (no SDL, no regularizers), separate (one LoRA per
style, fresh each time: the no-forgetting reference at T x storage), and each term switched off
(no_preserve_base keeps the earlier styles' replay but not the base's plain prompts). After the
last task the final model also samples the content prompts with no style token: how much of the
base is left (plain_kind: the kind asked for; plain_style: judged plain).

    python bench/forgetting.py --json docs/forgetting.json --heatmap docs/forgetting.png
    # on two cores: split the methods over two processes, then merge
    python bench/forgetting.py --methods full,naive,separate --json a.json &
    python bench/forgetting.py --methods no_sdl,no_weight_reg,no_feature_reg,no_preserve_base --json b.json; wait
    python bench/forgetting.py --merge a.json b.json --json docs/forgetting.json --heatmap docs/forgetting.png
    # a variant: any MuseumConfig field for every method, or another negative prompt when sampling
    python bench/forgetting.py --methods full --set replay_pool=256 --negative-token --json c.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

for _var in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
    os.environ.setdefault(_var, "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from generators import diffusion, miniworld  # noqa: E402
from generators.evaluators import load_evaluator  # noqa: E402
from generators.museum.config import MuseumConfig  # noqa: E402
from generators.museum.engine import learn, load_museum_pipeline, museum_prompt  # noqa: E402
from styles.folder import read_style_folder  # noqa: E402
from styles.museum import Museum  # noqa: E402
from styles.reference import apply_style  # noqa: E402

# Styles whose look survives studio-mini's autoencoder (style evaluator on encoded-decoded style
# images, docs/benchmarks.md): a style the autoencoder cannot reproduce cannot be scored as learnt.
DEFAULT_STYLES = ("pixel_art", "watercolor", "neon_glow", "flat_outline", "blueprint")
METHODS = {
    "full": {},
    "naive": {"use_sdl": False, "use_weight_reg": False, "use_feature_reg": False, "preserve_base": False},
    "separate": {"use_weight_reg": False},  # a fresh museum per style: the feature term replays the base only
    "no_sdl": {"use_sdl": False},
    "no_weight_reg": {"use_weight_reg": False},
    "no_feature_reg": {"use_feature_reg": False},
    "no_preserve_base": {"preserve_base": False},
    # design variants of the full method (not in the default --methods)
    "cross_attn_only": {"target_modules": ("attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0")},
    "replay_half": {"replay_share": 0.5},
}
DEFAULT_METHODS = ("full", "naive", "no_preserve_base", "separate", "no_feature_reg", "no_weight_reg", "no_sdl")


def style_folders(root: Path, styles, n: int, seed: int, size: int) -> dict[str, Path]:
    """n varied-content images per style with caption sidecars (content differs across styles)."""
    out = {}
    for s, style in enumerate(styles):
        folder = root / style
        folder.mkdir(parents=True)
        for i in range(n):
            sample = miniworld.generate(seed, 1000 * s + i, size=size)
            apply_style(style, sample.image, seed=i).save(folder / f"{i:03d}.png")
            (folder / f"{i:03d}.txt").write_text(sample.attributes.caption)
        out[style] = folder
    return out


def content_prompts(n: int, seed: int) -> list[miniworld.Attributes]:
    rng = np.random.default_rng([seed, 4242])
    return [miniworld.sample_attributes(rng) for _ in range(n)]


def score(museum: Museum, styles_so_far, prompts, evaluator, args):
    """Style accuracy per style and content accuracy, sampling each style on the same prompts/seeds
    (name None: the prompts without any style token, scored against "plain"). args.negative_token:
    the style's token alone is the negative prompt, so guidance pushes the content within the style."""
    pipe = load_museum_pipeline(museum, args.base, args.device)
    size = diffusion.base_resolution(pipe)
    style_acc, content_acc = {}, {}
    for name in styles_so_far:
        negative = museum.style(name).token if name and args.negative_token else ""
        settings = [diffusion.GenerationSettings(prompt=museum_prompt(museum, a.caption, [name]) if name else a.caption, seed=args.seed + k,
                                                 negative_prompt=negative, steps=args.sample_steps, guidance=args.guidance,
                                                 width=size, height=size)
                    for k, a in enumerate(prompts)]
        images = diffusion.generate(pipe, settings, batch_size=16)
        pred = evaluator.predict(images)
        style_acc[name] = float(np.mean([p == (name or "plain") for p in pred["style"]]))
        content_acc[name] = float(np.mean([p == a.kind for p, a in zip(pred["kind"], prompts)]))
    return style_acc, content_acc


def run_method(method, overrides, folders, args, evaluator, prompts, work: Path) -> dict:
    styles = list(folders)
    cfg = MuseumConfig.from_dict({**MuseumConfig().to_dict(), "steps": args.steps, **args.set, **overrides})
    T = len(styles)
    M = np.full((T, T), np.nan)
    content = np.full((T, T), np.nan)
    start = time.time()
    if method == "separate":
        for j, name in enumerate(styles):
            museum = Museum.open(work / f"{method}-{name}", base=diffusion.base_name(args.base), create=True)
            learn(museum, read_style_folder(folders[name], args.size), cfg, args.base, args.device)
            s, c = score(museum, [name], prompts, evaluator, args)
            M[j:, j], content[j:, j] = s[name], c[name]
            print(f"  {method}: {name} style {s[name]:.2f} content {c[name]:.2f}", flush=True)
    else:
        museum = Museum.open(work / method, base=diffusion.base_name(args.base), create=True)
        for i, name in enumerate(styles):
            learn(museum, read_style_folder(folders[name], args.size), cfg, args.base, args.device)
            s, c = score(museum, styles[: i + 1], prompts, evaluator, args)
            for j, other in enumerate(styles[: i + 1]):
                M[i, j], content[i, j] = s[other], c[other]
            print(f"  {method}: after {name}: " + " ".join(f"{k} {v:.2f}" for k, v in s.items()), flush=True)
    if method == "separate":  # each style's own LoRA leaves the base as it was for plain prompts
        plain_style, plain_kind = None, None
    else:
        s, c = score(museum, [None], prompts, evaluator, args)
        plain_style, plain_kind = s[None], c[None]
        print(f"  {method}: plain prompts after the last task: style plain {plain_style:.2f} kind {plain_kind:.2f}", flush=True)
    average = float(np.mean([np.mean(M[i, : i + 1]) for i in range(T)]))
    forgetting = float(np.mean([max(M[j, j] - M[i, j] for i in range(j + 1, T)) for j in range(T - 1)])) if T > 1 else 0.0
    return {
        "matrix": M.tolist(),
        "content_matrix": content.tolist(),
        "average": average,
        "forgetting": forgetting,
        "final_style_accuracy": float(np.mean(M[-1])),
        "content_accuracy": float(np.mean(content[-1])),
        "plain_style": plain_style,
        "plain_kind": plain_kind,
        "seconds": round(time.time() - start, 1),
        "config": cfg.to_dict(),
    }


def config_value(text: str):
    """A --set value: JSON (numbers, booleans, lists), else the bare word as a string (precision=bf16)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def heatmap(results: dict, styles, path: Path) -> None:
    """One accuracy matrix per method, side by side (PIL only: no plotting dependency)."""
    from PIL import Image, ImageDraw

    cell, pad = 28, 16
    T = len(styles)
    width = len(results) * (T * cell + pad) + pad
    img = Image.new("RGB", (width, T * cell + 3 * pad + 14), "white")
    draw = ImageDraw.Draw(img)
    for m, (method, r) in enumerate(results.items()):
        x0 = pad + m * (T * cell + pad)
        draw.text((x0, 4), f"{method} A{r['average']:.2f} F{r['forgetting']:.2f}", fill="black")
        for i in range(T):
            for j in range(T):
                v = r["matrix"][i][j]
                if v != v:  # nan: not learnt yet
                    continue
                shade = (int(255 * (1 - v)), int(200 * v + 55), 60)
                draw.rectangle([x0 + j * cell, 2 * pad + i * cell, x0 + (j + 1) * cell - 1, 2 * pad + (i + 1) * cell - 1], fill=shade)
    img.save(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--styles", default=",".join(DEFAULT_STYLES))
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"of {sorted(METHODS)}")
    p.add_argument("--images", type=int, default=10, help="images per style")
    p.add_argument("--steps", type=int, default=MuseumConfig().steps)
    p.add_argument("--prompts", type=int, default=12, help="content prompts scored per style")
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--negative-token", action="store_true",
                   help="sample each style with its own token as the negative prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a MuseumConfig field for every method, e.g. --set replay_pool=256 (repeatable)")
    p.add_argument("--base", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--heatmap", type=Path, default=None)
    p.add_argument("--keep-museum", type=Path, default=None,
                   help="keep the full method's museum here, with its forgetting.json (`studio serve --museum` shows both)")
    p.add_argument("--merge", type=Path, nargs="+", default=None,
                   help="combine the JSONs of runs that split --methods (same styles) into --json and --heatmap")
    args = p.parse_args()
    if any("=" not in item for item in args.set):
        p.error("--set takes KEY=VALUE, e.g. --set replay_pool=256")
    try:
        args.set = {k: config_value(v) for k, v in (item.split("=", 1) for item in args.set)}
        MuseumConfig.from_dict({**MuseumConfig().to_dict(), **args.set})
    except (ValueError, TypeError) as e:
        p.error(f"--set: {e}")
    if args.merge:
        runs = [json.loads(f.read_text()) for f in args.merge]
        if any(r["styles"] != runs[0]["styles"] for r in runs):
            p.error("--merge: the runs learnt different style sequences")
        merged = {**runs[0], "command": [r["command"] for r in runs], "results": {}}
        for r in runs:
            merged["results"].update(r["results"])
        args.json.write_text(json.dumps(merged, indent=2))
        if args.heatmap:
            heatmap(merged["results"], merged["styles"], args.heatmap)
        return
    torch.manual_seed(args.seed)
    args.size = diffusion.resolution_of(args.base)
    styles = args.styles.split(",")
    evaluator = load_evaluator(device="cpu")
    prompts = content_prompts(args.prompts, args.seed)
    work = Path(tempfile.mkdtemp(prefix="forgetting-"))
    try:
        folders = style_folders(work / "data", styles, args.images, args.seed, args.size)
        results = {}
        for method in args.methods.split(","):
            print(f"{method}:", flush=True)
            results[method] = run_method(method, METHODS[method], folders, args, evaluator, prompts, work)
            summary = {k: v for k, v in results[method].items() if k in ("average", "forgetting", "content_accuracy", "plain_kind", "seconds")}
            print(f"  {method}: {summary}", flush=True)
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"styles": styles, "command": " ".join(__import__("sys").argv),
                                             "base": diffusion.base_name(args.base), "results": results}, indent=2))
            if args.heatmap:
                heatmap(results, styles, args.heatmap)
            if args.keep_museum and method == "full":
                shutil.copytree(work / method, args.keep_museum)
                (args.keep_museum / "forgetting.json").write_text(json.dumps({"styles": styles, **results[method]}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
