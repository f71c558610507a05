"""studio-mini 2's milestones on one base, each by its own public command, as one table row.

    python bench/milestones.py --base runs/mini2 --out runs/milestones-chunk1 [--quick] [--skip ceiling]

Runs, writing each command's JSON under --out and the row to --out/row.json:
- content kept: `studio eval base` at seeds 0-3 (kind, colour, background; targets 0.90 / 0.90 /
  0.95) and with `--prompt-form no-colour` at seeds 0-1 (background, target 0.90);
- style words read back: `bench/style_family.py read-back` (named components found, target 0.80);
- species: `bench/species_prior.py --forms bob` (zero-shot subclass fidelity, BOB's colour-free
  prompt; target 0.60, chance 0.083);
- the style ceiling: `bench/style_ceiling.py --fit lora --checkpoints 300` (fresh-prompt style and
  kind, targets 0.70 / 0.70).
`--quick` uses fewer samples (a smoke run; not for the table).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], log) -> None:
    print("$", " ".join(cmd), file=log, flush=True)
    start = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    print(f"# {time.time() - start:.0f} s", file=log, flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--skip", default="", help="comma-separated parts to leave out: content,readback,species,ceiling")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    py, studio = sys.executable, str(Path(sys.executable).with_name("studio"))
    n_eval, n_read, n_species, n_prompts = (16, 16, 2, 4) if args.quick else (200, 200, 20, 24)
    row = {"base": args.base}
    with open(args.out / "commands.log", "a") as log:
        if "content" not in skip:
            evals = []
            for seed in range(2 if args.quick else 4):
                out = args.out / f"eval-seed{seed}.json"
                run([studio, "eval", "base", "--base", args.base, "--n", str(n_eval), "--seed", str(seed), "--json", str(out)], log)
                evals.append(json.loads(out.read_text()))
            for key in ("kind", "color", "background"):
                row[f"{key}_accuracy"] = [e[f"{key}_accuracy"] for e in evals]
            no_colour = []
            for seed in range(1 if args.quick else 2):
                out = args.out / f"eval-nocolour-seed{seed}.json"
                run([studio, "eval", "base", "--base", args.base, "--n", str(n_eval), "--seed", str(seed),
                     "--prompt-form", "no-colour", "--json", str(out)], log)
                no_colour.append(json.loads(out.read_text())["background_accuracy"])
            row["background_accuracy_no_colour"] = no_colour
        if "readback" not in skip:
            out = args.out / "readback.json"
            run([py, "bench/style_family.py", "read-back", "--base", args.base, "--n", str(n_read), "--json", str(out)], log)
            rb = json.loads(out.read_text())
            row["style_words_named_found"] = rb["styled"]["named_found"]
            row["style_words_false_positives_unstyled"] = rb["unstyled"]["unnamed_found_per_image"]
            row["kind_accuracy_styled_prompts"] = rb["styled"]["kind_accuracy"]
        if "species" not in skip:
            out = args.out / "species.json"
            run([py, "bench/species_prior.py", "--base", args.base, "--n", str(n_species), "--forms", "bob",
                 "--json", str(out)], log)
            row["species_bob"] = json.loads(out.read_text())["forms"]["bob"]
        if "ceiling" not in skip:
            out = args.out / "ceiling.json"
            run([py, "bench/style_ceiling.py", "--fit", "lora", "--checkpoints", "300", "--prompts", str(n_prompts),
                 "--base", args.base, "--json", str(out)], log)
            results = json.loads(out.read_text())["results"]
            per_style = [r["300"] for r in results.values()]
            row["style_ceiling_300"] = {k: sum(r[k] for r in per_style) / len(per_style) for k in per_style[0]}
    (args.out / "row.json").write_text(json.dumps(row, indent=2) + "\n")
    print(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
