"""Token separation and caption-free styles (issue 34): after N styles are learnt into one museum,
does the same prompt and seed with different style tokens give images the style evaluator tells
apart, and does new content take each style?

The styles arrive as a user drops them: by default bare folders of images, no caption files
(`--captions none`), learnt through the museum's batch ingestion path exactly as `studio ingest DIR`
runs it (generators.museum.ingest.plan reads each folder with styles.folder.read_style_folder, an
image without a sidecar gets no caption, which training reads as "a picture"; then
generators.museum.engine.learn per planned style, in the order of DIR/order.txt). `--captions
sidecar` writes the mini world's captions beside the images instead, for the comparison.

Scoring: fresh content prompts (mini-world captions, none of them any style image's content) ×
seeds, each sampled once per style token. Reported, each with a 95 % percentile bootstrap interval
over prompts (bench/stats.py, 1000 resamples, seeded):
- token separation: over every unordered pair of styles and every (prompt, seed), the share whose
  two images both get the style asked for (so different, correct labels); target >= 0.80. Also the
  share that merely get different labels, and the share per pair;
- per style: style accuracy on the new content prompts (does new content take the style?) and
  content accuracy (the kind asked for), with the labels its images got (a confusion row);
- plain prompts (no token): judged plain, and the kind asked for.

    python bench/token_separation.py --json runs/bench/token-separation.json                 # 5 bare folders, 300 steps each
    python bench/token_separation.py --captions sidecar --json runs/bench/token-separation-captions.json
    python bench/token_separation.py --museum runs/bench/museum-full --json F                # score a museum already learnt
    # smoke (minutes): 2 styles, 3 images, 2 steps, 3 prompts × 2 seeds, 2 sampling steps
    python bench/token_separation.py --styles pixel_art,watercolor --images 3 --steps 2 --prompts 3 --sample-steps 2 --set sample_steps=2 --set replay_pool=4 --bootstrap 200 --json /tmp/sep.json

Cost on this 2-core CPU (one thread, the default 5 styles × 300 steps, 48 prompts × 2 seeds):
learning about as long as the forgetting benchmark's full method (about 100 s a style), then
(N + 1) × 96 images at about 0.35 s each (20 steps, guidance 5): about 15 minutes in all.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import stats  # noqa: E402
from bench.forgetting import DEFAULT_STYLES, content_prompts, museum_overrides, score, style_folders  # noqa: E402
from bench.forgetting_report import SEPARATION_TARGET, metric_ci, separation_report  # noqa: E402
from generators import diffusion  # noqa: E402
from generators.evaluators import load_evaluator  # noqa: E402
from generators.museum import engine  # noqa: E402
from generators.museum.config import MuseumConfig  # noqa: E402
from generators.museum.ingest import plan  # noqa: E402
from styles.museum import Museum  # noqa: E402


def write_drop_folder(root: Path, styles: list[str], n: int, seed: int, size: int, captions: str) -> Path:
    """One sub-folder of images per style and an order.txt, as a user drops them (captions 'none':
    the images alone; 'sidecar': with the mini world's caption beside each image)."""
    style_folders(root, styles, n, seed, size)
    if captions == "none":
        for txt in root.glob("*/*.txt"):
            txt.unlink()
    (root / "order.txt").write_text("\n".join(styles) + "\n")
    return root


def ingest(root: Path, museum: Museum, args, evaluator) -> list[dict]:
    """`studio ingest root`: plan (reads every folder), then learn each planned style in order."""
    items = plan(root, museum, diffusion.resolution_of(args.base), overrides={"steps": args.steps, **args.set})
    bad = [f"{it.name}: {it.action} ({it.reason})" for it in items if it.action not in ("learn", "resume", "skip")]
    if bad:
        raise SystemExit("ingestion refused: " + "; ".join(bad))
    report = []
    for it in items:
        if it.action not in ("learn", "resume"):
            continue
        captioned = sum(im.caption is not None for im in it.style.images)
        t0 = time.time()
        manifest = engine.learn(museum, it.style, it.config, args.base, args.device, evaluator=evaluator)
        row = {"name": it.name, "token": manifest["token"], "images": len(manifest["images"]), "captioned_images": captioned,
               "steps": manifest["result"]["steps"], "final_loss": manifest["result"]["final_loss"],
               "ingest_style_score": manifest.get("metrics", {}).get("style_score"), "seconds": round(time.time() - t0, 1)}
        print(f"  learnt {it.name} as {row['token']}: {row['images']} images ({captioned} with captions), "
              f"{row['steps']} steps, {row['seconds']} s", flush=True)
        report.append(row)
    return report


def evaluate(museum: Museum, names: list[str], prompts, evaluator, args) -> dict:
    """Every style token (and none) on the same content prompts and seeds."""
    mean = lambda x: float(np.mean(x))  # noqa: E731
    scored = score(museum, names + [None], prompts, evaluator, args)
    per_style = {}
    for n in names:
        sc = scored[n]
        per_style[n] = {"style": metric_ci(mean, sc["style"].mean(1), args=args),
                        "content": metric_ci(mean, sc["content"].mean(1), args=args),
                        "labels": dict(Counter(sc["pred"].ravel().tolist()).most_common())}
    pred = np.stack([scored[n]["pred"] for n in names], -1)  # prompts × seeds × styles
    plain = scored[None]
    return {"token_separation": separation_report(pred, names, args), "per_style": per_style,
            "plain": {"style": metric_ci(mean, plain["style"].mean(1), args=args),
                      "kind": metric_ci(mean, plain["content"].mean(1), args=args)},
            "per_prompt": {n: {"style": stats.bits(scored[n]["style"]), "content": stats.bits(scored[n]["content"]),
                               "pred": scored[n]["pred"].ravel().tolist()} for n in names}}


def print_report(r: dict) -> None:
    f = stats.fmt_ci
    sep = r["token_separation"]
    print(f"\ntoken separation ({sep['pairs']} pairs, captions: {r['captions']}): correct and different "
          f"{f(sep['correct_and_different'])} (target >= {SEPARATION_TARGET:.2f}); different {f(sep['different'])}")
    print("\n| style | new content takes the style | content (kind) | labels its images got |")
    print("|---|---|---|---|")
    for n, s in r["per_style"].items():
        labels = ", ".join(f"{k} {v}" for k, v in list(s["labels"].items())[:4])
        print(f"| {n} | {f(s['style'])} | {f(s['content'])} | {labels} |")
    print(f"| (no token) | plain {f(r['plain']['style'])} | {f(r['plain']['kind'])} | |")
    print("\nper pair: " + ", ".join(f"{k} {v:.2f}" for k, v in sep["per_pair"].items()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--styles", default=None, help=f"comma-separated (default {','.join(DEFAULT_STYLES)}; with --museum: all its styles)")
    p.add_argument("--captions", default="none", choices=["none", "sidecar"],
                   help="none: bare folders of images (default); sidecar: a caption file beside each image")
    p.add_argument("--images", type=int, default=10, help="images per style")
    p.add_argument("--steps", type=int, default=MuseumConfig().steps)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a MuseumConfig field (repeatable)")
    p.add_argument("--museum", type=Path, default=None,
                   help="score this museum's styles (all, or --styles if given explicitly) instead of learning new ones")
    p.add_argument("--prompts", type=int, default=48)
    p.add_argument("--seeds-per-prompt", type=int, default=2)
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--negative-token", action="store_true", help="each style's token as its negative prompt")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--keep-museum", type=Path, default=None, help="keep the learnt museum here")
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args(argv)
    args.set = museum_overrides(p, args.set)
    start = time.time()
    args.size = diffusion.resolution_of(args.base)
    evaluator = load_evaluator(device="cpu")
    prompts = content_prompts(args.prompts, args.seed + 7)  # other prompts than forgetting.py's
    styles = args.styles.split(",") if args.styles else list(DEFAULT_STYLES)
    work = Path(tempfile.mkdtemp(prefix="token-separation-"))
    try:
        learnt = None
        if args.museum is not None:
            museum = Museum.open(args.museum, base=diffusion.base_name(args.base))
            if not args.styles:
                styles = [s.name for s in museum.styles]
        else:
            drop = write_drop_folder(work / "drop", styles, args.images, args.seed, args.size, args.captions)
            museum = Museum.open(work / "museum", base=diffusion.base_name(args.base), create=True)
            print(f"ingesting {len(styles)} {'bare' if args.captions == 'none' else 'captioned'} style folders from {drop}", flush=True)
            learnt = ingest(drop, museum, args, evaluator)
        t0 = time.time()
        result = evaluate(museum, styles, prompts, evaluator, args)
        report = {"benchmark": "token separation after N styles, and new content in each style (issue 34)",
                  "command": " ".join(sys.argv), "base": diffusion.base_name(args.base), "styles": styles,
                  "captions": args.captions if args.museum is None else "(existing museum)",
                  "museum": str(args.museum) if args.museum else None, "learnt": learnt,
                  "prompts": {"n": args.prompts, "seeds_per_prompt": args.seeds_per_prompt, "captions": [a.caption for a in prompts]},
                  "sample_steps": args.sample_steps, "guidance": args.guidance, "negative_token": args.negative_token,
                  "intervals": f"95 % percentile bootstrap over the content prompts ({args.bootstrap} resamples, seed {args.seed})",
                  **result, "seconds": {"score": round(time.time() - t0, 1), "total": round(time.time() - start, 1)}}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print_report(report)
        print(f"\nwrote {args.json} ({report['seconds']['total']} s)")
        if args.keep_museum and args.museum is None:
            shutil.copytree(work / "museum", args.keep_museum)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
