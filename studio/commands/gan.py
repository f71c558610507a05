"""`studio gan learn | sample | tasks`: a frozen GAN base learns a sequence of few-shot domains (LFS-GAN).

    studio gan learn DIR --task NAME --store S [--iters N] [--rank R] [--base PATH]
    studio gan sample --task NAME --store S --n N --seed SEED --out DIR
    studio gan tasks --store S [--json]

Each task stores only its LeFT modulators (about 1 % of the generator at rank 1); the base and
earlier tasks never change. A stopped (Ctrl-C) or killed `learn` resumes when run again with
the same arguments.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from generators.errors import UserError
from studio.commands.common import StopFlag, parse_set
from studio.progress import TqdmProgress


def _add_store(p) -> None:
    p.add_argument("--store", type=Path, required=True, help="task store folder (created by the first `learn`)")


def _add_base(p, learn: bool) -> None:
    p.add_argument("--base", type=Path, default=None,
                   help="GAN base folder (generator.safetensors + config.json); default: the store's base"
                        + (", else assets/gan-mini" if learn else ""))
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="where to run (default cpu)")


def register(sub) -> None:
    gan = sub.add_parser("gan", help="teach a frozen GAN base new 10-image domains, one after another (LFS-GAN)",
                         description="Lifelong few-shot GAN: LeFT modulators per task on a frozen StyleGAN2-style "
                                     "base, with cluster-wise mode seeking; zero forgetting by construction.")
    gsub = gan.add_subparsers(dest="gan_command", metavar="COMMAND", required=True)

    p = gsub.add_parser("learn", help="learn a new domain from a folder of images (about 10) as task NAME")
    p.add_argument("dir", type=Path, help="folder of images of the new domain (at least 2 usable; 10 is typical)")
    p.add_argument("--task", required=True, help="task name (lowercase letters, digits, '_' or '-')")
    _add_store(p)
    p.add_argument("--iters", type=int, default=None, help="training iterations (default 400; the paper uses 3000)")
    p.add_argument("--rank", type=int, default=None, help="LeFT rank (default 1)")
    p.add_argument("--no-mode-seeking", action="store_true", help="switch off cluster-wise mode seeking (ablation)")
    p.add_argument("--ms-distance", choices=["perceptual", "pixel"], default="perceptual",
                   help="distance that assigns fakes to their nearest task image (default perceptual: the evaluators)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation and training noise (default 0)")
    p.add_argument("--checkpoint-every", type=int, default=None, help="iterations between resumable checkpoints "
                                                                         "(default 100)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set any TrainConfig field, or left.FIELD (LeFTConfig), mode_seeking.FIELD (ModeSeekingConfig) "
                        "(repeatable; VALUE is JSON, or a plain string; applied after the other options), "
                        "e.g. --set r1_gamma=5 --set left.init_std=0.05 --set mode_seeking.weight=0.5")
    _add_base(p, learn=True)
    p.set_defaults(run=run_learn)

    s = gsub.add_parser("sample", help="write N samples of a task as PNGs")
    s.add_argument("--task", required=True, help="task name")
    _add_store(s)
    s.add_argument("--n", type=int, default=16, help="number of samples (default 16)")
    s.add_argument("--seed", type=int, default=0, help="latent seed: the same seed gives the same images (default 0)")
    s.add_argument("--truncation", type=float, default=1.0, help="truncation psi (default 1.0: none)")
    s.add_argument("--out", type=Path, required=True, help="output folder (created; existing PNGs of the same names "
                                                           "are replaced)")
    _add_base(s, learn=False)
    s.set_defaults(run=run_sample)

    t = gsub.add_parser("tasks", help="list the tasks of a store (storage per task, timings)")
    _add_store(t)
    t.add_argument("--json", action="store_true", help="print JSON")
    t.set_defaults(run=run_tasks)


def _apply_set(pairs: list[str], train, left, ms):
    """--set over the three configs of a task: plain keys are TrainConfig's, left.* and mode_seeking.* the others'."""
    from dataclasses import replace

    groups = {"": [], "left.": [], "mode_seeking.": []}
    for pair in pairs:
        prefix = next((p for p in ("left.", "mode_seeking.") if pair.startswith(p)), "")
        groups[prefix].append(pair[len(prefix):])
    return (replace(train, **parse_set(groups[""], type(train))),
            replace(left, **parse_set(groups["left."], type(left), "left.")),
            replace(ms, **parse_set(groups["mode_seeking."], type(ms), "mode_seeking.")))


def run_learn(args) -> int:
    from generators.gan.left import LeFTConfig
    from generators.gan.lifelong import learn_task
    from generators.gan.mode_seeking import ModeSeekingConfig
    from generators.gan.task_trainer import TrainConfig
    from generators.run import Run

    if args.iters is not None and args.iters < 1:
        raise UserError(f"--iters must be at least 1, got {args.iters}")
    if args.rank is not None and args.rank < 1:
        raise UserError(f"--rank must be at least 1, got {args.rank}")
    if args.checkpoint_every is not None and args.checkpoint_every < 1:
        raise UserError(f"--checkpoint-every must be at least 1, got {args.checkpoint_every}")
    train = TrainConfig(seed=args.seed)
    if args.iters:
        train.iters = args.iters
    if args.checkpoint_every:
        train.checkpoint_every = args.checkpoint_every
    left = LeFTConfig(rank=args.rank or 1)
    ms = ModeSeekingConfig(enabled=not args.no_mode_seeking, distance=args.ms_distance)
    train, left, ms = _apply_set(args.set, train, left, ms)
    with TqdmProgress(f"gan learn {args.task}") as progress:
        meta = learn_task(args.store, args.task, args.dir, base=args.base, left=left, train=train, mode_seeking=ms,
                          device=args.device, run=Run(progress=progress, should_stop=StopFlag()))
    if meta.get("stopped"):
        print(f"stopped task {args.task} at iteration {meta['step']}/{meta['iters']} (checkpoint in {meta['work']}); "
              "run the same command again to resume", file=sys.stderr)
        return 130
    st, tm = meta["storage"], meta["timings"]
    losses = ", ".join(f"{k} {v:.3f}" for k, v in meta["losses"].items() if k not in ("step", "ms_pairs"))
    print(f"learnt task {meta['name']} (#{meta['index']}) in {args.store}: {len(meta['images'])} images, "
          f"{meta['config']['train']['iters']} iterations in {tm['train_s']:.0f} s ({tm['s_per_iter']:.3f} s/iter); "
          f"storage {st['params']} numbers = {st['percent_of_G']:.3f} % of G ({st['bytes'] / 1024:.0f} KiB); {losses}")
    for name, reason in meta["rejected"]:
        print(f"  rejected {name}: {reason}")
    return 0


def run_sample(args) -> int:
    from generators.gan.lifelong import sample_task
    from generators.gan.sampling import to_pil

    if args.n < 1:
        raise UserError(f"--n must be at least 1, got {args.n}")
    images = sample_task(args.store, args.task, args.n, args.seed, truncation_psi=args.truncation, base=args.base,
                         device=args.device)
    if args.out.exists() and not args.out.is_dir():
        raise NotADirectoryError(f"{args.out} is not a folder; choose another --out")
    args.out.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(to_pil(images)):
        image.save(args.out / f"{args.task}-seed{args.seed}-{i:04d}.png")
    print(f"wrote {args.n} samples of task {args.task} to {args.out}")
    return 0


def run_tasks(args) -> int:
    from generators.gan.task_store import TaskStore, list_tasks, unfinished_tasks

    rows = list_tasks(args.store)
    info = TaskStore(args.store).info()
    pending = unfinished_tasks(args.store)
    if args.json:
        print(json.dumps({"store": str(args.store), "base": info["base"], "tasks": rows, "unfinished": pending},
                         indent=2))
        return 0
    print(f"store {args.store} on base {info['base']['path']} ({info['base']['g_params']} parameters): "
          f"{len(rows)} tasks")
    for r in rows:
        print(f"  {r['index']:3d} {r['name']:24s} {r['images']:3d} images  {r['iters']:5d} iters  rank {r['rank']}  "
              f"mode seeking {'on' if r['mode_seeking'] else 'off'}  storage {r['storage_params']} "
              f"({r['storage_percent_of_G']:.3f} % of G)  {r['train_s']:.0f} s")
    for p in pending:
        print(f"  unfinished: {p['name']} at iteration {p['step']}/{p['iters']} (rerun its `learn` to resume)")
    return 0
