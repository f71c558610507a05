"""Forgetting benchmark of the museum (issue 4): a sequence of reference styles, scored after each task.

For each method, styles are learnt one after another into a fresh museum; after task i every
style j <= i is sampled on fixed content prompts and seeds, and the style evaluator's accuracy
fills M[i, j]. Metrics (docs/methods.md §1.7): Average = mean_i mean_{j<=i} M[i, j];
Forgetting = mean_{j<T} max_{i>j} (M[j, j] - M[i, j]); content accuracy = the kind evaluator
agreeing with the object asked for, on the final model's styled samples.

Methods: full (default MuseumConfig), naive (no SDL, no regularizers), separate (one LoRA per
style, fresh each time: the no-forgetting reference at T x storage), and each term switched off
(no_preserve_base keeps the earlier styles' replay but not the base's plain prompts), and
weight_reg, the default plus MuseumMaker's weight term, which the defaults leave off. After the
last task the final model also samples the content prompts with no style token: how much of the
base is left (plain_kind: the kind asked for; plain_style: judged plain).

    python bench/forgetting.py --json docs/figures/forgetting.json --heatmap docs/figures/forgetting.png
    # on two cores: split the methods over two processes, then merge
    python bench/forgetting.py --methods full,naive,separate --json a.json &
    python bench/forgetting.py --methods no_sdl,weight_reg,no_feature_reg,no_preserve_base --json b.json; wait
    python bench/forgetting.py --merge a.json b.json --json docs/figures/forgetting.json --heatmap docs/figures/forgetting.png
    # a variant: any MuseumConfig field for every method, or another negative prompt when sampling
    python bench/forgetting.py --methods full --set replay_pool=256 --negative-token --json c.json
    # another training seed (the LoRA's start, the noise, the replay prompts; data and prompts unchanged),
    # merged beside seed 0: each figure also as the mean over the runs, and the full method's gains run by run
    python bench/forgetting.py --methods full,weight_reg --set seed=1 --json d.json
    python bench/forgetting.py --merge a.json d.json --json F

Statistics (issue 34). A cell is --prompts 48 content prompts × --seeds-per-prompt 2 seeds = 96
images (one image is 0.01 of a cell). Average, Forgetting, content, the diagonal and plain prompts
come with a 95 % percentile bootstrap interval over prompts (bench/stats.py: the prompts resampled
with replacement, the metric recomputed, 1000 resamples, seeded by --seed); the per-image 0/1
verdicts are kept in the JSON (`per_prompt`) so --merge recomputes every interval. Also reported:
the diagonal (each style's accuracy right after it is learnt), the plasticity gap against
`separate` when both are in the run or the merge (separate's mean diagonal minus the method's, a
paired bootstrap over the same prompts), token separation from the last model (the same prompt
and seed under every pair of style tokens: the share of pairs whose images get different, correct
style labels; target 0.80; bench/token_separation.py does the same for caption-free folders), and
the bare base on the same prompts and seeds (`base_reference`: the content ceiling). The intervals
leave out the spread between training runs; a merge of runs under several training seeds (keys
"method@seedS") adds `over_training_seeds`: each figure's mean over the runs, each run's value, and
the full method's gains paired run by run (bench/forgetting_report.py, over_runs).

Caches (--cache, default runs/bench/forgetting-cache; --no-cache): the bare base's verdicts and
each `separate` style's (one LoRA per style, so its column is sampled once, not after every task),
keyed by the base's weights, the sampling and museum code, the prompts, seeds, data and config:
a later run (a variant of full, say) gets the base reference and separate for free. Per
method the evaluator runs once per image for both the style and the kind head.

Cost per method on this 2-core CPU, one thread: the museum's 5 × 300 training steps about
10 minutes with one other process beside it (the 24-prompt runs of docs/lab/2026-12-notebook.md took 10-14
minutes a method in all; 0.7-1.0 s a step measured with four processes sharing the two cores),
plus 15 cells × 96 + 96 plain = 1,536 images at about 0.35 s each (20 steps, guidance 5; measured
on a 1-style, 16-prompt smoke run, CPU shared by three other processes): about 9 minutes. So
about 20 minutes a sequential method (up to twice that on a crowded CPU), about 13 for separate
(5 cells; nothing when cached), the default seven methods about 2.3 hours in one process (split
them over processes and --merge).

    # smoke (about a minute): 2 styles, 3 images, 2 steps, 3 prompts × 2 seeds, 2 sampling steps
    python bench/forgetting.py --styles pixel_art,watercolor --methods full,separate --images 3 --steps 2 --prompts 3 --sample-steps 2 --bootstrap 200 --set sample_steps=2 --set replay_pool=4 --cache /tmp/fcache --json /tmp/fsmoke.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

for _var in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
    os.environ.setdefault(_var, "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import stats  # noqa: E402
# the report (metrics, intervals, table, heatmap)
from bench.forgetting_report import (analyse, heatmap, metric_ci, over_runs, print_over_runs, print_table,  # noqa: E402
                                     run_key, separation_report)
from generators import diffusion, miniworld  # noqa: E402
from generators.config import parse_overrides  # noqa: E402
from generators.evaluators import load_evaluator  # noqa: E402
from generators.museum.config import MuseumConfig  # noqa: E402
from generators.museum.engine import learn, load_museum_pipeline  # noqa: E402
from generators.museum.train import style_prompt  # noqa: E402
from styles.folder import read_style_folder  # noqa: E402
from styles.museum import Museum  # noqa: E402
from styles.reference import apply_style  # noqa: E402

# Styles whose look survives studio-mini's autoencoder (style evaluator on encoded-decoded style
# images, docs/lab/2026-12-notebook.md): a style the autoencoder cannot reproduce cannot be scored as learnt.
DEFAULT_STYLES = ("pixel_art", "watercolor", "neon_glow", "flat_outline", "blueprint")
METHODS = {
    "full": {},
    "naive": {"use_sdl": False, "use_weight_reg": False, "use_feature_reg": False, "preserve_base": False},
    "separate": {"use_weight_reg": False},  # a fresh museum per style: the feature term replays the base only
    "no_sdl": {"use_sdl": False},
    "weight_reg": {"use_weight_reg": True},  # the weight term, off in the defaults, added (λ_w, its form: MuseumConfig)
    "no_feature_reg": {"use_feature_reg": False},
    "no_preserve_base": {"preserve_base": False},
    # design variants of the full method (not in the default --methods)
    "cross_attn_only": {"target_modules": ("attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0")},
    "replay_half": {"replay_share": 0.5},
}
SEED_STRIDE = 10_007  # image (prompt k, seed s) samples with seed --seed + k + SEED_STRIDE * s
DEFAULT_CACHE = ROOT / "runs" / "bench" / "forgetting-cache"
EVALUATOR_ID = "assets/evaluators"  # replaced by the committed evaluator's fingerprint in main()
DEFAULT_METHODS = ("full", "naive", "no_preserve_base", "separate", "no_feature_reg", "weight_reg", "no_sdl")


def style_folders(root: Path, styles, n: int, seed: int, size: int) -> dict[str, Path]:
    """n varied-content images per style with caption sidecars (content differs across styles).

    A style's images depend on its name alone (its place in DEFAULT_STYLES, then in `styles`), so
    a run over a subset (--styles) trains each style on the images the whole run does, and a cached
    `separate` style (keyed by name) is the same fit."""
    out = {}
    canonical = list(DEFAULT_STYLES) + [x for x in styles if x not in DEFAULT_STYLES]
    for style in styles:
        s = canonical.index(style)
        folder = root / style
        folder.mkdir(parents=True)
        for i in range(n):
            sample = miniworld.generate(seed, 1000 * s + i, size=size)
            apply_style(style, sample.image, seed=i).save(folder / f"{i:03d}.png")
            (folder / f"{i:03d}.txt").write_text(sample.attributes.caption)
        out[style] = folder
    return out


def museum_overrides(parser: argparse.ArgumentParser, pairs: list[str]) -> dict:
    """`--set KEY=VALUE` pairs as MuseumConfig field values by the CLI's rules (known fields, JSON
    values of the field's type, a config that builds); anything else is the parser's error."""
    try:
        overrides = parse_overrides(pairs, MuseumConfig)
        MuseumConfig.from_dict({**MuseumConfig().to_dict(), **overrides})
    except ValueError as e:
        parser.error(str(e))
    return overrides


def content_prompts(n: int, seed: int) -> list[miniworld.Attributes]:
    rng = np.random.default_rng([seed, 4242])
    return [miniworld.sample_attributes(rng) for _ in range(n)]


def image_seeds(args) -> np.ndarray:
    """The sampling seed of image (prompt k, seed s): args.seed + k + SEED_STRIDE * s (s = 0 is the
    single seed per prompt earlier runs used), prompts × seeds."""
    k = np.arange(args.prompts)[:, None]
    s = np.arange(args.seeds_per_prompt)[None, :]
    return args.seed + k + SEED_STRIDE * s


def score(museum: Museum | None, styles_so_far, prompts, evaluator, args):
    """Per style (name None: the prompts without any style token, scored against "plain"), the
    evaluator's verdicts on the same prompts and seeds, each prompts × seeds: {"style": 0/1 (the
    style asked for), "content": 0/1 (the kind asked for), "pred": style labels}. museum None: the
    bare base. args.negative_token: the style's token alone is the negative prompt, so guidance
    pushes the content within the style."""
    pipe = load_museum_pipeline(museum, args.base, args.device) if museum is not None else diffusion.load_base(args.base, args.device)
    size = diffusion.base_resolution(pipe)
    seeds = image_seeds(args)
    P, S = seeds.shape
    out = {}
    for name in styles_so_far:
        negative = museum.style(name).token if name and args.negative_token else ""
        prompt = [style_prompt(a.caption, [museum.style(name).token]) if name else a.caption for a in prompts]
        settings = [diffusion.GenerationSettings(prompt=prompt[k], seed=int(seeds[k, s]), negative_prompt=negative,
                                                 steps=args.sample_steps, guidance=args.guidance, width=size, height=size)
                    for k in range(P) for s in range(S)]
        images = diffusion.generate(pipe, settings, batch_size=args.batch)
        pred = evaluator.predict(images)  # one evaluator pass gives both heads
        style = np.asarray([p == (name or "plain") for p in pred["style"]], dtype=np.float64).reshape(P, S)
        kinds = np.repeat([a.kind for a in prompts], S)
        content = np.asarray([p == k for p, k in zip(pred["kind"], kinds)], dtype=np.float64).reshape(P, S)
        out[name] = {"style": style, "content": content, "pred": np.asarray(pred["style"], dtype=object).reshape(P, S)}
    return out


# --- caches: what does not change between methods or runs is sampled once ----------------------


def base_fingerprint(base) -> str:
    """What identifies a base's weights: a local folder's file sizes and mtimes (a retrained base
    changes it), else the hub id."""
    path = Path(diffusion.base_path(base))
    if not path.is_dir():
        return str(base)
    files = sorted((str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns) for f in path.rglob("*") if f.is_file())
    return hashlib.sha256(json.dumps([diffusion.base_name(base), files]).encode()).hexdigest()[:16]


def code_fingerprint() -> str:
    """The source that draws and trains (sampling, the museum's training, the style renderers and
    folder reading): a cached verdict is stale once any of it changes."""
    files = [ROOT / "generators" / "diffusion.py", ROOT / "styles" / "reference.py", ROOT / "styles" / "folder.py",
             *sorted((ROOT / "generators" / "museum").glob("*.py"))]
    return hashlib.sha256(b"".join(f.read_bytes() for f in files if f.is_file())).hexdigest()[:16]


def cache_key(args, prompts, **extra) -> str:
    spec = {"base": base_fingerprint(args.base), "code": code_fingerprint(), "device": args.device, "prompts": [a.caption for a in prompts], "seeds": image_seeds(args).tolist(),
            "sample_steps": args.sample_steps, "guidance": args.guidance, "negative_token": args.negative_token,
            "evaluator": EVALUATOR_ID, **extra}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:20]


def pack(scored: dict) -> dict:
    return {"style": stats.bits(scored["style"]), "content": stats.bits(scored["content"]),
            "pred": [str(x) for x in scored["pred"].ravel()], "shape": list(scored["style"].shape)}


def unpack(d: dict) -> dict:
    shape = tuple(d["shape"])
    return {"style": stats.unbits(d["style"]).reshape(shape), "content": stats.unbits(d["content"]).reshape(shape),
            "pred": np.asarray(d["pred"], dtype=object).reshape(shape)}


def cached(args, key: str, compute):
    """compute() -> scored dict, read from / written to args.cache/KEY.json (no cache: compute)."""
    if args.cache is None:
        return compute()
    f = args.cache / f"{key}.json"
    if f.is_file():
        return unpack(json.loads(f.read_text()))
    scored = compute()
    args.cache.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".partial")
    tmp.write_text(json.dumps(pack(scored)))
    tmp.replace(f)
    return scored


def base_reference(prompts, evaluator, args) -> dict:
    """The bare base on the content prompts (no LoRA, no token), sampled once per base, prompts and
    seeds (cached on disk): the content ceiling every method's content and plain_kind compare to."""
    t0 = time.time()
    scored = cached(args, "base-" + cache_key(args, prompts), lambda: score(None, [None], prompts, evaluator, args)[None])
    return {"kind": metric_ci(lambda c: float(np.mean(c)), scored["content"].mean(1), args=args),
            "plain_style": metric_ci(lambda c: float(np.mean(c)), scored["style"].mean(1), args=args),
            "per_prompt": {"style": stats.bits(scored["style"]), "content": stats.bits(scored["content"])},
            "seconds": round(time.time() - t0, 1)}



def weight_bytes(root: Path) -> int:
    """Bytes of a museum's weights: its shared LoRA file(s) and every style's token."""
    return sum(f.stat().st_size for pattern in ("lora/*.safetensors", "styles/*/embedding.safetensors")
               for f in root.glob(pattern))


def run_method(method, overrides, folders, args, evaluator, prompts, work: Path) -> dict:
    styles = list(folders)
    cfg = MuseumConfig.from_dict({**MuseumConfig().to_dict(), "steps": args.steps, **args.set, **overrides})
    T = len(styles)
    P, S = args.prompts, args.seeds_per_prompt
    style_rows = [[None] * T for _ in range(T)]  # 0/1 verdicts per cell, prompt-major bits
    content_rows = [[None] * T for _ in range(T)]
    M = np.full((T, T), np.nan)
    content = np.full((T, T), np.nan)
    start = time.time()
    timing = {"learn": 0.0, "score": 0.0, "cached_styles": 0}
    learn_seconds = [None] * T  # per task (None: a cached separate style)
    storage = [None] * T  # weight bytes held after each task (one museum per style for separate)
    final = None
    if method == "separate":
        for j, name in enumerate(styles):
            # style_images: fits cached before a style's images depended on its name alone are not reused
            key = "separate-" + cache_key(args, prompts, style=name, images=args.images, data_seed=args.seed, size=args.size,
                                          config=cfg.to_dict(), style_images="by-name")

            def compute(j=j, name=name):
                museum = Museum.open(work / f"{method}-{name}", base=diffusion.base_name(args.base), create=True)
                t0 = time.time()
                learn(museum, read_style_folder(folders[name], args.size), cfg, args.base, args.device)
                learn_seconds[j] = round(time.time() - t0, 1)
                timing["learn"] += time.time() - t0
                storage[j] = weight_bytes(museum.root)
                t0 = time.time()
                out = score(museum, [name], prompts, evaluator, args)[name]
                timing["score"] += time.time() - t0
                return out

            if args.cache is not None and (args.cache / f"{key}.json").is_file():
                timing["cached_styles"] += 1
            sc = cached(args, key, compute)  # one LoRA per style: its column is the same after every task
            for i in range(j, T):
                style_rows[i][j], content_rows[i][j] = stats.bits(sc["style"]), stats.bits(sc["content"])
            M[j:, j], content[j:, j] = sc["style"].mean(), sc["content"].mean()
            print(f"  {method}: {name} style {M[j, j]:.2f} content {content[j, j]:.2f}", flush=True)
    else:
        museum = Museum.open(work / method, base=diffusion.base_name(args.base), create=True)
        for i, name in enumerate(styles):
            t0 = time.time()
            learn(museum, read_style_folder(folders[name], args.size), cfg, args.base, args.device)
            learn_seconds[i] = round(time.time() - t0, 1)
            timing["learn"] += time.time() - t0
            storage[i] = weight_bytes(museum.root)
            t0 = time.time()
            sc = score(museum, styles[: i + 1], prompts, evaluator, args)
            timing["score"] += time.time() - t0
            for j, other in enumerate(styles[: i + 1]):
                style_rows[i][j], content_rows[i][j] = stats.bits(sc[other]["style"]), stats.bits(sc[other]["content"])
                M[i, j], content[i, j] = sc[other]["style"].mean(), sc[other]["content"].mean()
            print(f"  {method}: after {name}: " + " ".join(f"{k} {M[i, j]:.2f}" for j, k in enumerate(styles[: i + 1])), flush=True)
        final = np.stack([sc[n]["pred"] for n in styles], -1)  # prompts × seeds × styles, the last model
    if method == "separate":  # each style's own LoRA leaves the base as it was for plain prompts
        plain_style = plain_kind = plain_style_ci = plain_kind_ci = None
    else:
        t0 = time.time()
        sc = score(museum, [None], prompts, evaluator, args)[None]
        timing["score"] += time.time() - t0
        plain_style, plain_kind = float(sc["style"].mean()), float(sc["content"].mean())
        plain_style_ci = metric_ci(lambda c: float(np.mean(c)), sc["style"].mean(1), args=args)
        plain_kind_ci = metric_ci(lambda c: float(np.mean(c)), sc["content"].mean(1), args=args)
        print(f"  {method}: plain prompts after the last task: style plain {plain_style:.2f} kind {plain_kind:.2f}", flush=True)
    average = float(np.mean([np.mean(M[i, : i + 1]) for i in range(T)]))
    forgetting = float(np.mean([max(M[j, j] - M[i, j] for i in range(j + 1, T)) for j in range(T - 1)])) if T > 1 else 0.0
    out = {
        "matrix": M.tolist(),
        "content_matrix": content.tolist(),
        "average": average,
        "forgetting": forgetting,
        "final_style_accuracy": float(np.mean(M[-1])),
        "content_accuracy": float(np.mean(content[-1])),
        "diagonal": np.diagonal(M).tolist(),
        "plain_style": plain_style,
        "plain_kind": plain_kind,
        "plain_style_ci": plain_style_ci,
        "plain_kind_ci": plain_kind_ci,
        "token_separation": separation_report(final, styles, args) if final is not None else None,
        "per_prompt": {"shape": [P, S], "style": style_rows, "content": content_rows},
        "seconds": round(time.time() - start, 1),
        "seconds_detail": {k: round(v, 1) if isinstance(v, float) else v for k, v in timing.items()},
        "learn_seconds_per_task": learn_seconds,
        # separate: each style's own museum; the running total is what T styles cost
        "weight_bytes_after_task": (np.cumsum([b or 0 for b in storage]).tolist() if method == "separate" else storage),
        "images_sampled": int(sum(x is not None for row in style_rows for x in row) * P * S + (0 if plain_style is None else P * S)),
        "config": cfg.to_dict(),
    }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--styles", default=",".join(DEFAULT_STYLES))
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"of {sorted(METHODS)}")
    p.add_argument("--images", type=int, default=10, help="images per style")
    p.add_argument("--steps", type=int, default=MuseumConfig().steps)
    p.add_argument("--prompts", type=int, default=48, help="content prompts scored per style (the bootstrap's units)")
    p.add_argument("--seeds-per-prompt", type=int, default=2,
                   help="sampling seeds per content prompt: a cell is prompts × seeds images (default 48 × 2 = 96)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the prompts for the 95 %% intervals")
    p.add_argument("--batch", type=int, default=16, help="images per sampling batch")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                   help="where the bare base's images' verdicts and each separate LoRA's are kept between runs "
                        "(keyed by base weights, prompts, seeds, sampling and training settings)")
    p.add_argument("--no-cache", action="store_true", help="sample everything afresh and keep nothing")
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
    args.set = museum_overrides(p, args.set)
    if args.prompts < 1 or args.seeds_per_prompt < 1 or args.bootstrap < 1:
        p.error("--prompts, --seeds-per-prompt and --bootstrap must be at least 1")
    if args.no_cache:
        args.cache = None
    if args.merge:
        runs = [json.loads(f.read_text()) for f in args.merge]
        if any(r["styles"] != runs[0]["styles"] for r in runs):
            p.error("--merge: the runs learnt different style sequences")
        shapes = {tuple(r2["per_prompt"]["shape"]) for r in runs for r2 in r["results"].values() if r2.get("per_prompt")}
        if len(shapes) > 1 or len({json.dumps(r.get("prompts")) for r in runs}) > 1:
            p.error("--merge: the runs scored different prompts or seeds; intervals and gaps need the same ones")
        merged = {**runs[0], "command": [r["command"] for r in runs], "results": {}}
        for path, r in zip(args.merge, runs):
            for m, result in r["results"].items():
                key = run_key(m, result)
                if key in merged["results"]:
                    p.error(f"--merge: {path} holds {key} again (the same method and training seed): merge a variant "
                            "(another --set) under its own --json")
                merged["results"][key] = result
        analyse(merged["results"], args)  # the plasticity gap needs separate and the method, from any of the runs
        try:
            merged["over_training_seeds"] = over_runs(merged["results"], args)
        except ValueError as e:
            p.error(f"--merge: {e}")
        args.json.write_text(json.dumps(merged, indent=2))
        if args.heatmap:
            heatmap(merged["results"], merged["styles"], args.heatmap)
        print_table(merged["results"], merged.get("base_reference"))
        print_over_runs(merged["over_training_seeds"])
        return
    global EVALUATOR_ID
    EVALUATOR_ID = base_fingerprint(ROOT / "assets" / "evaluators")
    torch.manual_seed(args.seed)
    args.size = diffusion.resolution_of(args.base)
    styles = args.styles.split(",")
    evaluator = load_evaluator(device="cpu")
    prompts = content_prompts(args.prompts, args.seed)
    work = Path(tempfile.mkdtemp(prefix="forgetting-"))
    try:
        folders = style_folders(work / "data", styles, args.images, args.seed, args.size)
        results = {}
        base_ref = base_reference(prompts, evaluator, args)
        print(f"the bare base on the content prompts: kind {stats.fmt_ci(base_ref['kind'])} ({base_ref['seconds']} s)", flush=True)
        for method in args.methods.split(","):
            print(f"{method}:", flush=True)
            results[method] = run_method(method, METHODS[method], folders, args, evaluator, prompts, work)
            analyse(results, args)
            summary = {k: v for k, v in results[method].items() if k in ("average", "forgetting", "content_accuracy", "plain_kind", "seconds")}
            print(f"  {method}: {summary}", flush=True)
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({
                "styles": styles, "command": " ".join(sys.argv), "base": diffusion.base_name(args.base),
                "prompts": {"n": args.prompts, "seeds_per_prompt": args.seeds_per_prompt, "seed": args.seed,
                            "captions": [a.caption for a in prompts]},
                "intervals": f"95 % percentile bootstrap over the content prompts ({args.bootstrap} resamples, seed {args.seed})",
                "base_reference": base_ref, "results": results}, indent=2))
            if args.heatmap:
                heatmap(results, styles, args.heatmap)
            if args.keep_museum and method == "full":
                shutil.copytree(work / method, args.keep_museum)
                (args.keep_museum / "forgetting.json").write_text(json.dumps({"styles": styles, **results[method]}, indent=2))
        print_table(results, base_ref)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
