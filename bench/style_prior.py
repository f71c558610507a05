"""Benchmark: does a base already draw a reference style when a prompt names it?

Stable Diffusion knows many styles by name, and a museum's learnt token moves within that
knowledge; studio-mini was trained on plain renderings only. This measures the prior on a
mini-world base: for each style, the forgetting benchmark's fixed content prompts with the
style's name after the content ("a red fish on the sea background, ..., sepia", where a museum
puts a style's token), sampled at the museum's settings; the committed style evaluator reads
the style back (argmax over the 12 styles and plain, chance 1/13) and the kind head the content.
A style the base was never taught by name (the forgetting benchmark's five, on any base built
with `studio pretrain base --caption-styles` without them) is the control, and "plain" (the
prompts with no style name, scored as plain) says whether the base still draws plain when asked.

    python bench/style_prior.py --base runs/base6 --json runs/style-prior.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.forgetting import content_prompts  # noqa: E402
from generators import diffusion  # noqa: E402
from generators.evaluators import load_evaluator  # noqa: E402
from styles.reference import PLAIN, REFERENCE_STYLES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default=None, help="pipeline folder or hub id (default: the default embedded base)")
    p.add_argument("--evaluators", type=Path, default=ROOT / "assets" / "evaluators")
    p.add_argument("--styles", default=",".join((PLAIN,) + REFERENCE_STYLES))
    p.add_argument("--prompts", type=int, default=24, help="content prompts per style")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args(argv)

    start = time.time()
    pipe = diffusion.load_base(args.base, device="cpu")
    evaluator = load_evaluator(args.evaluators, device="cpu")
    size = diffusion.base_resolution(pipe)
    prompts = content_prompts(args.prompts, args.seed)
    # Whether the base has the style's name as one token (None for plain: no name in the prompt).
    known = {s: None if s == PLAIN else len(pipe.tokenizer(s, add_special_tokens=False).input_ids) == 1
             for s in args.styles.split(",")}
    result = {"base": diffusion.base_name(args.base), "prompts": args.prompts, "seed": args.seed, "steps": args.steps,
              "guidance": args.guidance, "chance": 1 / (len(REFERENCE_STYLES) + 1), "styles": {}}
    for style, one_token in known.items():
        settings = [diffusion.GenerationSettings(prompt=a.caption if style == PLAIN else f"{a.caption}, {style}", seed=args.seed + k, steps=args.steps,
                                                 guidance=args.guidance, width=size, height=size)
                    for k, a in enumerate(prompts)]
        pred = evaluator.predict(diffusion.generate(pipe, settings, batch_size=24))
        result["styles"][style] = {
            "one_token": one_token,
            "style": float(np.mean([s == style for s in pred["style"]])),
            "kind": float(np.mean([k == a.kind for k, a in zip(pred["kind"], prompts)])),
            "read_as": {s: pred["style"].count(s) for s in sorted(set(pred["style"]))},
        }
        r = result["styles"][style]
        print(f"{style:14s} {'-' if one_token is None else 'word' if one_token else 'bytes':5s}: style {r['style']:.2f}  kind {r['kind']:.2f}  {r['read_as']}", flush=True)
    result["seconds"] = round(time.time() - start, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
