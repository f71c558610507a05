"""Snapshots of running `studio pretrain gan` runs, and a kind-recognised screen of them.

    python bench/gan_snapshots.py watch runs/gan22 runs/gan23 --every 900 --out runs/snaps
    python bench/gan_snapshots.py screen runs/snaps/* --seeds 100,101 --json runs/screen.json

`watch` copies each run's checkpointed G_ema (what the final generator.safetensors will hold) into
OUT/<run>-<step>/, a gan-mini folder that `studio eval gan --base` reads, whenever the run has
written a new checkpoint; it stops when every run has written its final files. `screen` reports
the fraction of 1,000 samples the kind evaluator recognises (p >= 0.8, as `studio eval gan`) at
seeds kept apart from the reported ones (0, 1, 2, 11), so that a snapshot chosen here can be
confirmed on those without having been chosen on them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from generators.evaluators import load_evaluator  # noqa: E402
from generators.files import CHECKPOINT_FILE, save_tensors  # noqa: E402
from generators.gan.evaluate import kinds_recognised  # noqa: E402
from generators.gan.folder import load_generator  # noqa: E402
from generators.gan.pretrain_files import CHECKPOINT_JSON, module_state  # noqa: E402
from generators.gan.sampling import generate, to_pil  # noqa: E402

THRESHOLD = 0.8  # as `studio eval gan`


def snapshot(run: Path, out: Path) -> Path | None:
    """OUT/<run>-<step>/ from run's checkpoint, or None if that step is already there."""
    step = json.loads((run / CHECKPOINT_JSON).read_text())["step"]
    dest = out / f"{run.name}-{step}"
    if dest.exists():
        return None
    g_ema = module_state(load_file(str(run / CHECKPOINT_FILE)), "G_ema.")
    tmp = out / f".{run.name}-{step}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    save_tensors(g_ema, tmp / "generator.safetensors")
    shutil.copy(run / "config.json", tmp / "config.json")
    tmp.rename(dest)
    return dest


def watch(runs: list[Path], every: float, out: Path) -> None:
    started = time.time()
    while True:
        for run in runs:
            if (run / CHECKPOINT_JSON).exists():
                made = snapshot(run, out)
                if made:
                    print(time.strftime("%H:%M:%S"), made, flush=True)
        # A run that has finished since we started leaves generator.safetensors newer than our start.
        if all((r / "generator.safetensors").exists() and (r / "generator.safetensors").stat().st_mtime > started
               for r in runs):
            return
        time.sleep(every)


def screen(folders: list[Path], seeds: list[int], n: int, json_out: Path) -> None:
    evaluator = load_evaluator(ROOT / "assets" / "evaluators")
    rows = []
    for folder in folders:
        G = load_generator(folder)
        kind = [kinds_recognised(evaluator, to_pil(generate(G, n, s, 1.0)), THRESHOLD)[0] for s in seeds]
        rows.append({"folder": str(folder), "kind_recognised": kind, "mean": round(sum(kind) / len(kind), 4)})
        print(json.dumps(rows[-1]), flush=True)
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps({"seeds": seeds, "n": n, "threshold": THRESHOLD, "snapshots": rows}, indent=1) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("watch", help="copy each run's checkpointed G_ema whenever it changes")
    w.add_argument("runs", type=Path, nargs="+")
    w.add_argument("--every", type=float, default=900, help="seconds between looks")
    w.add_argument("--out", type=Path, default=Path("runs/snaps"))
    s = sub.add_parser("screen", help="kind recognised of each gan-mini folder at selection seeds")
    s.add_argument("folders", type=Path, nargs="+")
    s.add_argument("--seeds", default="100,101", help="keep these apart from the reported seeds 0, 1, 2, 11")
    s.add_argument("--n", type=int, default=1000)
    s.add_argument("--json", type=Path, default=Path("runs/bench/gan-snapshots.json"))
    s.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.cmd == "watch":
        watch(args.runs, args.every, args.out)
    else:
        torch.set_num_threads(args.threads)
        screen(args.folders, [int(x) for x in args.seeds.split(",")], args.n, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
