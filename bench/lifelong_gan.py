"""Benchmark: lifelong few-shot GAN on a sequence of mini-world domains (LFS-GAN, docs/methods.md §2).

    python bench/lifelong_gan.py [--base assets/gan-mini] [--iters 400] [--tasks 4] [--json OUT]
    python bench/lifelong_gan.py --tiny --json /tmp/lg.json      # smoke run on a tiny random base
    python bench/lifelong_gan.py --time-default-task [--time-iters 40]

Tasks (10 shots each, in this order; `--tasks N` takes the first N): pixel_art, watercolor,
pencil_sketch (reference styles over plain mini-world renderings), then "new-bird": the bird
kind on (kind, colour, background) triples held out of base pretraining (the base recipe
sees all eleven kinds, so this is the "new object" domain the current gan-mini allows; pass
`--new-kind` to pick another kind), then thermal and pop_art.

Methods, compared in one run on the same shots:
  left_ms   LeFT modulators + cluster-wise mode seeking (the task store, `learn_task`)
  left      LeFT without mode seeking
  full_ft   full fine-tuning of G per task, from the base each time (T x the generator stored)
  seq_ft    sequential fine-tuning of one G through all tasks (one G stored; shows forgetting)

Per task and method: mini-FID (evaluators' features) of `--eval-n` samples against `--eval-n`
fresh renderings of the target domain (1,000 by default, from a seed range the shots do not
use), B-LPIPS-style diversity (docs/methods.md §2.3: samples assigned to the nearest of the 10 shots under
the evaluators' perceptual distance, p_c = |C_c| / n, LPIPS_c = mean pairwise distance among
the first 50 members of cluster c; B-LPIPS = Σ_c (−p_c log10 p_c) · LPIPS_c) and the plain
intra-cluster LPIPS; metrics right after the task and after the last task (forgetting =
after-last − right-after, in mini-FID). For the LeFT methods, samples of every task are also
compared bitwise before and after the later tasks. Also reported: storage per task, seconds
per task, and the sampling cost of a baked task generator relative to the base.

Targets (issue 5): LeFT + MS within 1.25x of full fine-tuning's mini-FID, more diverse
(B-LPIPS) than LeFT without MS, zero forgetting; one task at default settings <= 5 minutes on CPU.
The figures only mean something on a trained gan-mini; `--tiny` runs the whole pipeline on a
tiny random base to show it works.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from generators import miniworld  # noqa: E402
from generators.gan.left import LeFTConfig  # noqa: E402
from generators.gan.folder import load_generator, resolve_base, save_discriminator, save_generator  # noqa: E402
from generators.gan.lifelong import learn_task, load_task_generator  # noqa: E402
from generators.gan.mode_seeking import ModeSeekingConfig, PerceptualDistance  # noqa: E402
from generators.gan.sampling import generate  # noqa: E402
from generators.gan.stylegan2 import Discriminator, GANConfig, Generator, count_params  # noqa: E402
from generators.gan.task_trainer import TaskTrainer, TrainConfig, mapping_w_avg, task_discriminator  # noqa: E402
from generators.run import Run  # noqa: E402

METHODS = ("left_ms", "left", "full_ft", "seq_ft")
SHOT_SEED, EVAL_SEED = 31_000, 93_000
SAMPLE_SEED = 424_242
CHECK_SEED, CHECK_N = 777, 32


@dataclass(frozen=True)
class Domain:
    name: str
    style: str = "plain"
    kinds: tuple[str, ...] | None = None
    held_out: bool | None = False


def domains(new_kind: str = "bird") -> list[Domain]:
    return [
        Domain("pixel_art", "pixel_art"),
        Domain("watercolor", "watercolor"),
        Domain("pencil_sketch", "pencil_sketch"),
        Domain(f"new-{new_kind}", "plain", (new_kind,), True),
        Domain("thermal", "thermal"),
        Domain("pop_art", "pop_art"),
    ]


def render_domain(d: Domain, seed: int, n: int, size: int) -> list:
    from styles.reference import apply_style

    kw = {"held_out": d.held_out}
    if d.kinds:
        kw["kinds"] = d.kinds
    out = []
    for i in range(n):
        img = miniworld.generate(seed, i, size=size, **kw).image
        out.append(img if d.style == "plain" else apply_style(d.style, img, seed=seed * 1000 + i))
    return out


def to_tensor(images) -> torch.Tensor:
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


# --------------------------------------------------------------------------- metrics


def b_lpips(pd: PerceptualDistance, samples: torch.Tensor, shots: torch.Tensor, first: int = 50) -> dict:
    """B-LPIPS (docs/methods.md §2.3) and the mean intra-cluster LPIPS of `samples` clustered on `shots`."""
    assign = torch.cat([pd.matrix(samples[i:i + 100], shots).argmin(1) for i in range(0, len(samples), 100)])
    n = len(samples)
    total, intra, used = 0.0, [], 0
    sizes = []
    for c in range(len(shots)):
        members = (assign == c).nonzero().flatten()
        sizes.append(int(members.numel()))
        if members.numel() < 2:
            continue
        m = members[:first]
        dm = pd.matrix(samples[m], samples[m])
        iu = torch.triu_indices(len(m), len(m), 1)
        lp = float(dm[iu[0], iu[1]].mean())
        p = members.numel() / n
        total += -p * math.log10(p) * lp
        intra.append(lp)
        used += 1
    return {"b_lpips": round(total, 5), "intra_lpips": round(float(np.mean(intra)) if intra else 0.0, 5),
            "cluster_sizes": sizes}


def sample_hash(x: torch.Tensor) -> str:
    return hashlib.sha256(x.contiguous().numpy().tobytes()).hexdigest()


class Evaluation:
    def __init__(self, evaluator, n_eval: int, size: int):
        self.evaluator, self.n_eval, self.size = evaluator, n_eval, size
        self.pd = PerceptualDistance(evaluator)
        self.target_feats: dict[str, torch.Tensor] = {}

    def target(self, k: int, d: Domain) -> torch.Tensor:
        if d.name not in self.target_feats:
            imgs = render_domain(d, EVAL_SEED + k, self.n_eval, self.size)
            self.target_feats[d.name] = self.evaluator.features(to_tensor(imgs))
        return self.target_feats[d.name]

    def __call__(self, G: Generator, k: int, d: Domain, shots: torch.Tensor) -> dict:
        from generators.evaluators import frechet_distance

        samples = generate(G, self.n_eval, SAMPLE_SEED + k)
        fid = frechet_distance(self.evaluator.features(samples), self.target(k, d))
        return {"mini_fid": round(fid, 4), **b_lpips(self.pd, samples, shots)}


# --------------------------------------------------------------------------- full fine-tuning baselines


def full_finetune(G: Generator, base_path: Path, shots: torch.Tensor, train: TrainConfig, device) -> tuple:
    """Fine-tune every parameter of (a copy of) G on `shots`, D from the base; returns (G, seconds)."""
    t0 = time.monotonic()
    G = copy.deepcopy(G).to(device).train().requires_grad_(True)
    D, _ = task_discriminator(base_path, G.config, train.seed, device)
    trainer = TaskTrainer(G, D, list(G.parameters()), shots, train, ModeSeekingConfig(enabled=False), None, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train.seed)
        for _ in range(train.iters):
            trainer.step()
    return G.eval().requires_grad_(False), time.monotonic() - t0


# --------------------------------------------------------------------------- sampling cost


def sampling_ratio(base_G: Generator, task_G: Generator, n: int, repeats: int = 7) -> dict:
    """Seconds to sample n images from the base and from a baked task generator, interleaved.

    The ratio uses the fastest of `repeats` runs of each (robust to other load on a shared CPU);
    the medians are reported too.
    """
    def t(G):
        t0 = time.perf_counter()
        generate(G, n, 0, batch=min(n, 32))
        return time.perf_counter() - t0

    t(base_G), t(task_G)  # warm-up
    tb, tt = [], []
    for i in range(repeats):
        for G, acc in ((base_G, tb), (task_G, tt)) if i % 2 == 0 else ((task_G, tt), (base_G, tb)):
            acc.append(t(G))
    return {"n": n, "repeats": repeats, "base_s_min": round(min(tb), 4), "task_s_min": round(min(tt), 4),
            "ratio": round(min(tt) / min(tb), 4), "base_s_median": round(float(np.median(tb)), 4),
            "task_s_median": round(float(np.median(tt)), 4),
            "ratio_median": round(float(np.median(tt)) / float(np.median(tb)), 4)}


# --------------------------------------------------------------------------- main run


def tiny_base(folder: Path, resolution: int = 32) -> Path:
    cfg = GANConfig(resolution=resolution, z_dim=32, w_dim=32, mapping_layers=2,
                    channels=tuple([32] * (int(math.log2(resolution)) - 1)))
    torch.manual_seed(0)
    save_generator(Generator(cfg), cfg, folder)
    save_discriminator(Discriminator(cfg), cfg, folder)
    return folder


def run(args) -> dict:
    from generators.evaluators import load_evaluator

    t_all = time.monotonic()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    work = Path(tempfile.mkdtemp(prefix="lifelong-gan-"))
    base_path = tiny_base(work / "tiny-base") if args.tiny else resolve_base(args.base)
    base_G = load_generator(base_path, device=device)
    size = base_G.config.resolution
    doms = domains(args.new_kind)[: args.tasks]
    if len(doms) < args.tasks:
        raise SystemExit(f"--tasks at most {len(domains())}")
    evaluator = load_evaluator(device=str(device))
    ev = Evaluation(evaluator, args.eval_n, size)
    train = TrainConfig(iters=args.iters, checkpoint_every=max(args.iters, 1) + 1,
                        w_avg_samples=256 if args.tiny else 4096, seed=args.seed)
    left = LeFTConfig(rank=args.rank)
    shots = {}
    shot_dirs = {}
    for k, d in enumerate(doms):
        imgs = render_domain(d, SHOT_SEED + 1000 * args.seed + k, args.shots, size)
        folder = work / "shots" / d.name
        folder.mkdir(parents=True)
        for i, im in enumerate(imgs):
            im.save(folder / f"{i:02d}.png")
        shot_dirs[d.name] = folder
        shots[d.name] = to_tensor(imgs)

    results: dict = {m: {} for m in args.methods}
    timings: dict = {m: {} for m in args.methods}
    storage: dict = {}
    g_params = count_params(base_G)

    def log(msg):
        print(f"[{time.monotonic() - t_all:7.1f} s] {msg}", flush=True)

    # ---- LeFT, with and without mode seeking: the task store
    for method in ("left_ms", "left"):
        if method not in args.methods:
            continue
        store = work / f"store-{method}"
        ms = ModeSeekingConfig(enabled=method == "left_ms", distance=args.ms_distance)
        checks = {}
        for k, d in enumerate(doms):
            meta = learn_task(store, d.name, shot_dirs[d.name], base=base_path, left=left, train=train,
                              mode_seeking=ms, device=device, evaluator=evaluator)
            G, _ = load_task_generator(store, d.name, device=device)
            res = ev(G, k, d, shots[d.name])
            results[method][d.name] = {"after_task": res}
            timings[method][d.name] = meta["timings"]["train_s"] + meta["timings"]["setup_s"]
            storage[method] = meta["storage"]
            checks[d.name] = sample_hash(generate(G, CHECK_N, CHECK_SEED))
            log(f"{method:8s} {d.name:14s} mini-FID {res['mini_fid']:.3f}  B-LPIPS {res['b_lpips']:.4f}  "
                f"{timings[method][d.name]:.1f} s")
        for k, d in enumerate(doms):  # after the last task: bitwise identical samples => identical metrics
            G, _ = load_task_generator(store, d.name, device=device)
            same = sample_hash(generate(G, CHECK_N, CHECK_SEED)) == checks[d.name]
            r = results[method][d.name]
            r["bitwise_identical_after_last_task"] = same
            r["after_last"] = r["after_task"] if same else ev(G, k, d, shots[d.name])
            r["forgetting_fid"] = round(r["after_last"]["mini_fid"] - r["after_task"]["mini_fid"], 4)
        if method == "left_ms":
            G, _ = load_task_generator(store, doms[0].name, device=device)
            results["sampling_cost"] = sampling_ratio(base_G, G, args.ratio_n)
            log(f"sampling cost baked task / base: {results['sampling_cost']['ratio']:.3f}")

    # ---- full fine-tuning per task (from the base each time)
    if "full_ft" in args.methods:
        for k, d in enumerate(doms):
            G, secs = full_finetune(base_G, base_path, shots[d.name], train, device)
            res = ev(G, k, d, shots[d.name])
            results["full_ft"][d.name] = {"after_task": res, "after_last": res, "forgetting_fid": 0.0}
            timings["full_ft"][d.name] = round(secs, 3)
            log(f"full_ft  {d.name:14s} mini-FID {res['mini_fid']:.3f}  B-LPIPS {res['b_lpips']:.4f}  {secs:.1f} s")
        storage["full_ft"] = {"params": g_params, "percent_of_G": 100.0, "note": "one whole G per task"}

    # ---- sequential fine-tuning of one G
    if "seq_ft" in args.methods:
        G = base_G
        for k, d in enumerate(doms):
            G, secs = full_finetune(G, base_path, shots[d.name], train, device)
            res = ev(G, k, d, shots[d.name])
            results["seq_ft"][d.name] = {"after_task": res}
            timings["seq_ft"][d.name] = round(secs, 3)
            log(f"seq_ft   {d.name:14s} mini-FID {res['mini_fid']:.3f}  B-LPIPS {res['b_lpips']:.4f}  {secs:.1f} s")
        for k, d in enumerate(doms):
            r = results["seq_ft"][d.name]
            r["after_last"] = r["after_task"] if k == len(doms) - 1 else ev(G, k, d, shots[d.name])
            r["forgetting_fid"] = round(r["after_last"]["mini_fid"] - r["after_task"]["mini_fid"], 4)
        storage["seq_ft"] = {"params": g_params, "percent_of_G": 100.0, "note": "one G for all tasks (overwritten)"}

    summary = summarize(results, doms, args.methods)
    out = {
        "benchmark": "lifelong_gan", "tiny": args.tiny, "base": str(base_path), "base_config": base_G.config.to_dict(),
        "g_params": g_params, "tasks": [d.__dict__ for d in doms], "shots": args.shots, "eval_n": args.eval_n,
        "train": train.to_dict(), "left": left.to_dict(), "ms_distance": args.ms_distance,
        "results": results, "timings_s": timings, "storage_per_task": storage, "summary": summary,
        "device": str(device), "threads": torch.get_num_threads(), "machine": platform.machine(),
        "processor": platform.processor(), "torch": torch.__version__, "wall_s": round(time.monotonic() - t_all, 1),
    }
    print_table(out)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        out["work"] = str(work)
    return out


def summarize(results, doms, methods) -> dict:
    mean = lambda xs: round(float(np.mean(xs)), 4) if xs else None  # noqa: E731
    s = {}
    for m in methods:
        r = results.get(m, {})
        s[m] = {
            "mini_fid": mean([r[d.name]["after_task"]["mini_fid"] for d in doms if d.name in r]),
            "b_lpips": mean([r[d.name]["after_task"]["b_lpips"] for d in doms if d.name in r]),
            "forgetting_fid": mean([r[d.name]["forgetting_fid"] for d in doms if d.name in r]),
        }
    targets = {}
    if {"left_ms", "full_ft"} <= set(methods):
        targets["fid_within_1.25x_full_ft"] = s["left_ms"]["mini_fid"] <= 1.25 * s["full_ft"]["mini_fid"]
    if {"left_ms", "left"} <= set(methods):
        targets["more_diverse_than_left"] = s["left_ms"]["b_lpips"] > s["left"]["b_lpips"]
    for m in ("left_ms", "left"):
        if m in methods:
            targets[f"{m}_zero_forgetting"] = all(results[m][d.name]["bitwise_identical_after_last_task"] for d in doms)
    s["targets"] = targets
    return s


def print_table(out: dict) -> None:
    doms = [d["name"] for d in out["tasks"]]
    print("\nmini-FID right after each task (after the last task) | B-LPIPS")
    print(f"{'method':8s} " + " ".join(f"{n:>22s}" for n in doms))
    for m, r in out["results"].items():
        if m == "sampling_cost":
            continue
        cells = []
        for n in doms:
            a, b = r[n]["after_task"], r[n]["after_last"]
            cells.append(f"{a['mini_fid']:7.2f} ({b['mini_fid']:7.2f}) {a['b_lpips']:5.3f}")
        print(f"{m:8s} " + " ".join(f"{c:>22s}" for c in cells))
    print("summary:", json.dumps(out["summary"]))
    if "sampling_cost" in out["results"]:
        print("sampling cost:", json.dumps(out["results"]["sampling_cost"]))
    print("storage per task:", json.dumps(out["storage_per_task"]))


# --------------------------------------------------------------------------- one task at default settings


def time_default_task(args) -> dict:
    """One task at default settings (TrainConfig(), LeFT rank 1, mode seeking with the evaluators) on a
    random base of the default GANConfig architecture. With --time-iters K the run stops after K
    iterations and the full default task is extrapolated from the measured setup and s/iter."""
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="lifelong-gan-time-"))
    cfg = GANConfig()
    torch.manual_seed(0)
    base = work / "base"
    save_generator(Generator(cfg), cfg, base)
    save_discriminator(Discriminator(cfg), cfg, base)
    d = domains()[0]
    folder = work / "shots"
    folder.mkdir()
    for i, im in enumerate(render_domain(d, SHOT_SEED, 10, cfg.resolution)):
        im.save(folder / f"{i:02d}.png")
    default = TrainConfig()
    stop_after = args.time_iters or default.iters
    count = {"n": 0}

    def should_stop():
        count["n"] += 1
        return count["n"] > stop_after

    t0 = time.monotonic()
    meta = learn_task(work / "store", "timing", folder, base=base, device=args.device, run=Run(should_stop=should_stop))
    wall = time.monotonic() - t0
    if meta.get("stopped"):  # extrapolate: measured s/iter over the default iterations + setup + w_avg + write
        ck = json.loads((work / "store" / "work" / "timing" / "checkpoint.json").read_text())
        s_iter = ck["train_seconds"] / ck["step"]
        G = load_generator(base)
        from generators.gan.left import attach_left

        attach_left(G)
        t1 = time.monotonic()
        mapping_w_avg(G, default.w_avg_samples)
        w_avg_s = time.monotonic() - t1
        setup_s = wall - ck["train_seconds"]
        est = setup_s + s_iter * default.iters + w_avg_s
        res = {"measured_iters": ck["step"], "s_per_iter": round(s_iter, 4), "setup_and_checkpoint_s": round(setup_s, 2),
               "w_avg_s": round(w_avg_s, 2), "default_iters": default.iters, "estimated_task_s": round(est, 1),
               "extrapolated": True}
    else:
        res = {"measured_iters": default.iters, "s_per_iter": meta["timings"]["s_per_iter"],
               "task_s": round(wall, 1), "extrapolated": False, "storage": meta["storage"]}
    res.update({"g_params": count_params(Generator(cfg)), "threads": torch.get_num_threads(), "device": args.device,
                "processor": platform.processor() or platform.machine()})
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(res, indent=2))
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default=None, help="GAN base folder (default assets/gan-mini)")
    p.add_argument("--tiny", action="store_true", help="a tiny random base, few iterations and samples (smoke run)")
    p.add_argument("--iters", type=int, default=None, help="iterations per task (default 400; --tiny: 4)")
    p.add_argument("--tasks", type=int, default=4, help="number of tasks in the sequence (default 4)")
    p.add_argument("--shots", type=int, default=10, help="images per task (default 10)")
    p.add_argument("--eval-n", type=int, default=None, help="samples and target renderings per task (default 1000; "
                                                            "--tiny: 48)")
    p.add_argument("--rank", type=int, default=1, help="LeFT rank (default 1)")
    p.add_argument("--seed", type=int, default=0, help="training seed; it also picks other shots (default 0)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma list from {','.join(METHODS)}")
    p.add_argument("--ms-distance", default="perceptual", choices=["perceptual", "pixel"])
    p.add_argument("--new-kind", default="bird", choices=miniworld.KINDS, help="kind of the new-object task")
    p.add_argument("--ratio-n", type=int, default=None, help="samples timed for the sampling-cost ratio (default 64)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the temporary stores, shots and bases")
    p.add_argument("--time-default-task", action="store_true",
                   help="only time one task at default settings on a random default-architecture base")
    p.add_argument("--time-iters", type=int, default=None,
                   help="with --time-default-task: stop after this many iterations and extrapolate")
    args = p.parse_args(argv)
    if args.time_default_task:
        res = time_default_task(args)
    else:
        args.methods = tuple(m for m in args.methods.split(",") if m)
        bad = [m for m in args.methods if m not in METHODS]
        if bad:
            p.error(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
        if args.tasks < 1:
            p.error("--tasks must be at least 1")
        args.iters = args.iters or (4 if args.tiny else TrainConfig().iters)
        args.eval_n = args.eval_n or (48 if args.tiny else 1000)
        args.ratio_n = args.ratio_n or (32 if args.tiny else 64)
        res = run(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
