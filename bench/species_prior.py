"""Benchmark: does a base already draw the bird subclasses when a prompt names them?

BOB and DataDream work because their base (Stable Diffusion) already knows the classes by name;
the LoRA only moves it towards the few real images. This measures that prior on a mini-world
base: for each of the 12 subclasses, n prompts naming it, generated with the settings of a
synthetic export; the committed subclass evaluator reads each image back (argmax over the 12
subclasses, chance 1/12), and the kind head says whether a bird was drawn at all.

Three prompt forms: "plain" is DataDream's "a {class} bird"; "bob" is BOB's template with a random
medium or large bird's background and pose ("a sparrow bird on the sky background, large, facing
left, at the top"); "caption" is that bird's full mini-world caption with its subclass named,
colour included ("a red sparrow bird on the sky background, large, facing left, at the top").

    python bench/species_prior.py --base assets/studio-mini-2 --json runs/species-prior-mini.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generators import diffusion, miniworld  # noqa: E402
from generators.evaluators import load_evaluator  # noqa: E402
from generators.synthetic import fit  # noqa: E402
from generators.synthetic.extract import miniworld_pose  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def prompts(form: str, classes: list[str], n: int, seed: int) -> list[tuple[str, str]]:
    """(class, prompt) pairs, n per class."""
    out = []
    for label, c in enumerate(classes):
        for i in range(n):
            rng = np.random.default_rng([seed, label, i, 17])
            attrs = miniworld.sample_attributes(rng, kinds=("bird",), subclasses=(c,), scales=("medium", "large"))
            if form == "plain":
                out.append((c, fit.fill(fit.PLAIN_TEMPLATE, c, "bird")))
            elif form == "bob":
                pose = miniworld_pose(attrs.position, attrs.scale, attrs.facing, attrs.tilt)
                out.append((c, fit.fill(fit.TEMPLATE, c, "bird", attrs.background, pose)))
            else:
                out.append((c, attrs.species_caption()))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default=None, help="pipeline folder or hub id (default: the default embedded base)")
    p.add_argument("--evaluators", type=Path, default=ROOT / "assets" / "evaluators")
    p.add_argument("--n", type=int, default=20, help="images per class and prompt form")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--forms", default="plain,bob,caption")
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args(argv)

    start = time.time()
    pipe = diffusion.load_base(args.base, device="cpu")
    evaluator = load_evaluator(args.evaluators, device="cpu")
    classes = list(miniworld.BIRD_SUBCLASSES)
    size = diffusion.base_resolution(pipe)
    names = evaluator.labels["subclass"]
    result = {"base": diffusion.base_name(args.base), "n_per_class": args.n, "seed": args.seed, "steps": args.steps,
              "guidance": args.guidance, "chance": 1 / len(classes), "forms": {}}
    for form in args.forms.split(","):
        pairs = prompts(form, classes, args.n, args.seed)
        settings = [diffusion.GenerationSettings(prompt=text, seed=args.seed * 100_000 + i, steps=args.steps,
                                                 guidance=args.guidance, width=size, height=size)
                    for i, (_, text) in enumerate(pairs)]
        images = diffusion.generate(pipe, settings, batch_size=24)
        logits = evaluator.logits(images)
        sub = logits["subclass"][:, [names.index(c) for c in classes]].argmax(-1).numpy()
        kinds = evaluator.labels["kind"]
        bird_drawn = float((logits["kind"].argmax(-1).numpy() == kinds.index("bird")).mean())
        labels = np.asarray([classes.index(c) for c, _ in pairs])
        per_class = {c: float((sub[labels == k] == k).mean()) for k, c in enumerate(classes)}
        result["forms"][form] = {"class_fidelity": float((sub == labels).mean()),
                                 "bird_drawn": bird_drawn,
                                 "per_class": per_class, "example_prompt": pairs[0][1]}
        print(f"{form}: class fidelity {result['forms'][form]['class_fidelity']:.3f} (chance {1 / len(classes):.3f}), "
              f"bird drawn {result['forms'][form]['bird_drawn']:.3f}", flush=True)
    result["seconds"] = round(time.time() - start, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
