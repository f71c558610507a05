"""Lifelong few-shot GAN (LFS-GAN, docs/methods.md §2): the engine's front door.

A frozen base learns a sequence of domains, one task per folder of about 10 images; each task
stores only its LeFT modulators in a task store (`generators.gan.task_store`), so earlier tasks
never change (zero forgetting by construction).

    learn_task(store, name, images_dir, base=..., run=Run(...))   # -> task.json (or a stopped result)
    G, meta = load_task_generator(store, name)                    # baked: samples cost what the base's cost
    images = sample_task(store, name, n=16, seed=0)

`learn_task` owns the policy: which base (the store's, else assets/gan-mini; a store is bound to
one base by its sha256), what is validated before anything is written (images, base, name), when
an unfinished run resumes (work/<name>/ with the same images and options; only iters may change)
and what a finished task records. The training itself is `generators.gan.task_trainer`. Every
`checkpoint_every` iterations the run is saved and `learn_task` with the same arguments resumes
it (bitwise the same result as an uninterrupted run on the CPU).

The run seam (generators/run.py): progress(iteration, iters, loss_G=, loss_D=, loss_ms=) about
twice a second, done reaching iters when the task is learnt; should_stop() polled before every
iteration (the task then writes its checkpoint and returns {"stopped": True, ...}); every
run.preview_every iterations (not at the last, whose samples the finished task gives) the
engine samples `generators.gan.sampling.preview_images` from the generator being trained and
calls run.preview; run.log gets a line when a task resumes.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch

from generators.diffusion import resolve_device
from generators.errors import UserError
from generators.gan.folder import load_generator, resolve_base
from generators.gan.left import (
    LeFTConfig,
    attach_left,
    bake,
    count_left_parameters,
    left_parameters,
    left_state,
    load_left_state,
)
from generators.gan.mode_seeking import ModeSeekingConfig, make_distance
from generators.gan.sampling import generate, preview_images
from generators.gan.stylegan2 import count_params
from generators.gan.task_store import (
    MODULATORS_FILE,
    STORE_FORMAT,
    STORE_VERSION,
    TaskStore,
    check_task_name,
    now_iso,
)
from generators.gan.task_trainer import TaskTrainer, TrainConfig, mapping_w_avg, task_discriminator
from generators.run import Run, as_run

W_AVG_KEY = "w_avg"  # the task's truncation centre, stored beside its modulators
MIN_TASK_IMAGES = 2
IGNORED_FILES = frozenset({"metadata.jsonl", "readme.md", ".ds_store", "thumbs.db", "style.toml"})


def read_task_images(folder, resolution: int) -> tuple[torch.Tensor, list[dict], list[tuple[str, str]]]:
    """The usable images of a task folder as a float tensor [N, 3, R, R] in [-1, 1].

    Each file goes through `styles.folder.load_image` (validated, EXIF-transposed, RGB,
    centre-cropped to `resolution`); unreadable files, other file types, sub-folders and
    duplicates are rejected with a reason. Fewer than 2 usable images: UserError.
    Returns (images, [{"file", "sha256"}], [(file, reason)]).
    """
    import numpy as np

    from styles.folder import scan_images

    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"task folder {folder} not found; pass a folder of images")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder; pass a folder of images")
    found, rejected = scan_images(folder, resolution, "task", skip_hidden=True, ignored=IGNORED_FILES)
    arrays = [np.asarray(image, dtype=np.uint8) for _, image, _ in found]
    used = [{"file": path.name, "sha256": digest} for path, _, digest in found]
    if len(arrays) < MIN_TASK_IMAGES:
        detail = ("; rejected: " + "; ".join(f"{f}: {r}" for f, r in rejected[:5])) if rejected else ""
        raise UserError(f"task folder {folder} has {len(arrays)} usable images, needs at least {MIN_TASK_IMAGES}"
                        f"{detail}")
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    return x.contiguous(), used, rejected


def _load_evaluator_for(ms: ModeSeekingConfig, evaluator, device):
    if not ms.enabled or ms.distance != "perceptual" or evaluator is not None:
        return evaluator
    from generators.evaluators import load_evaluator

    return load_evaluator(device=str(device))


def _resume_key(left: LeFTConfig, ms: ModeSeekingConfig, train: TrainConfig, images: list[dict], base_sha: str):
    """What an unfinished run must share with the call that resumes it (all options but iters and checkpoint_every)."""
    t = train.to_dict()
    t.pop("iters")
    t.pop("checkpoint_every")
    return {"left": left.to_dict(), "mode_seeking": ms.to_dict(), "train": t,
            "images": [im["sha256"] for im in images], "base_sha256": base_sha}


def learn_task(store, name: str, images_dir, base=None, left: LeFTConfig | None = None,
               train: TrainConfig | None = None, mode_seeking: ModeSeekingConfig | None = None,
               device="cpu", run: Run | None = None, evaluator=None) -> dict:
    """Learn task `name` from the images in `images_dir` into `store`; returns its task.json (or, when
    stopped early, {"stopped": True, "step": ..., "iters": ..., "work": ...}).

    base: the base folder (default: the store's base, else assets/gan-mini). A store is bound
    to one base (sha256 of generator.safetensors). An unfinished run of the same task in
    work/<name>/ is resumed; it must have the same images and options (only iters may change).
    Nothing is written to the store before the images and base are validated.
    run: progress in iterations, stop, previews, log (see the module docstring).
    """
    t_start = time.monotonic()
    run = as_run(run)
    left = left or LeFTConfig()
    train = train or TrainConfig()
    ms = mode_seeking or ModeSeekingConfig()
    check_task_name(name)
    st = TaskStore(store)
    dev = resolve_device(device)
    if st.exists() and base is None:
        base_path, _ = st.base_path()
    else:
        base_path = resolve_base(base)
    if st.task_dir(name).exists():
        raise FileExistsError(f"task {name!r} is already in store {st.root}; choose another --task")
    G = load_generator(base_path, device=dev)
    reals, used, rejected = read_task_images(images_dir, G.config.resolution)
    evaluator = _load_evaluator_for(ms, evaluator, dev)
    g_params = count_params(G)
    base_sha = st.create_or_check(base_path, G.config.to_dict(), g_params)

    rng_devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):  # the caller's RNG state is left alone
        torch.manual_seed(train.seed)
        G.train().requires_grad_(False)
        attach_left(G, left, seed=train.seed)
        params = left_parameters(G)
        D, d_origin = task_discriminator(base_path, G.config, train.seed, dev)
        distance = make_distance(ms.distance, reals.to(dev), evaluator) if ms.enabled else None
        trainer = TaskTrainer(G, D, params, reals, train, ms, distance, dev)

        key = _resume_key(left, ms, train, used, base_sha)
        prev_train_s, runs = 0.0, 1
        saved = st.read_checkpoint(name)
        if saved is not None:
            data, tensors = saved
            work = st.work_dir(name)
            if data.get("resume_key") != key:
                raise UserError(f"{work} holds an unfinished run of task {name!r} with other images or options; "
                                f"rerun with the same ones to resume, or delete {work} to start over")
            trainer.load_state_tensors(tensors, data["step"])
            trainer.history = data.get("history", [])
            prev_train_s, runs = float(data.get("train_seconds", 0.0)), int(data.get("runs", 1)) + 1
            run.log(f"resuming task {name} at iteration {trainer.step_count}/{train.iters}")

        def save_checkpoint(train_s):
            st.write_checkpoint(name, trainer.state_tensors(),
                                {"step": trainer.step_count, "iters": train.iters, "resume_key": key,
                                 "history": trainer.history, "train_seconds": round(train_s, 3), "runs": runs})

        setup_s = time.monotonic() - t_start
        t_loop = time.monotonic()
        start_step = trainer.step_count
        last_report, reported = 0.0, None
        log_every = max(1, min(25, train.iters // 20 or 1))
        stopped = False
        while trainer.step_count < train.iters:
            if run.should_stop():
                stopped = True
                break
            info = trainer.step()
            s = trainer.step_count
            if s % log_every == 0 or s == train.iters:
                avg = trainer.averages(reset=True)
                trainer.history.append({"step": s, **{k: round(v, 5) for k, v in avg.items()}})
            now = time.monotonic()
            if now - last_report >= 0.5 or s == train.iters:
                last_report, reported = now, s
                run.progress(s, train.iters, loss_G=info["loss_G"], loss_D=info["loss_D"],
                             **({"loss_ms": info["loss_ms"]} if "loss_ms" in info else {}))
            if run.wants_preview(s) and s < train.iters:
                run.preview(s, *preview_images(G, f"iteration {s}"))
            if s % train.checkpoint_every == 0 and s < train.iters:
                save_checkpoint(prev_train_s + now - t_loop)
        train_s = time.monotonic() - t_loop
        done = min(trainer.step_count, train.iters)
        if reported != done:  # where it stopped, or a resumed run that had no iteration left
            run.progress(done, train.iters)
        if stopped:
            save_checkpoint(prev_train_s + train_s)
            return {"stopped": True, "step": trainer.step_count, "iters": train.iters, "work": str(st.work_dir(name))}

        # ---- the finished task: modulators + w_avg, task.json, written as one folder
        G.eval()
        w_avg = mapping_w_avg(G, train.w_avg_samples)
        tensors = left_state(G)
        tensors[W_AVG_KEY] = w_avg.contiguous()
        n_stored = count_left_parameters(G) + w_avg.numel()
        iters_run = trainer.step_count - start_step
        meta = {
            "format": STORE_FORMAT, "version": STORE_VERSION, "name": name,
            "index": len(st.task_names()) + 1, "created_at": now_iso(),
            "base": {"path": str(base_path.resolve()), "sha256": base_sha, "g_params": g_params},
            "config": {"left": left.to_dict(), "mode_seeking": ms.to_dict(), "train": train.to_dict(),
                       "gan": G.config.to_dict()},
            "images": used, "rejected": [list(r) for r in rejected], "images_dir": str(Path(images_dir).resolve()),
            "discriminator": d_origin,
            "storage": {"params": int(n_stored), "left_params": count_left_parameters(G), "w_avg": int(w_avg.numel()),
                        "base_params": g_params, "percent_of_G": round(100.0 * n_stored / g_params, 4),
                        "bytes": 4 * int(n_stored)},
            "timings": {"setup_s": round(setup_s, 3), "train_s": round(prev_train_s + train_s, 3),
                        "train_s_this_run": round(train_s, 3),
                        "s_per_iter": round(train_s / max(iters_run, 1), 5), "runs": runs,
                        "device": str(dev), "threads": torch.get_num_threads(), "machine": platform.machine()},
            "losses": trainer.history[-1] if trainer.history else {},
            "loss_history": trainer.history,
        }
        st.write_task(name, tensors, meta, wall_start=t_start)
        return meta


# --------------------------------------------------------------------------- sampling


def load_task_generator(store, name: str, base=None, device="cpu", baked: bool = True):
    """(generator of task `name`, its task.json): the base with the task's modulators, baked by default.

    Baked: a plain Generator with the modulated weights computed once (sampling it costs what
    sampling the base costs). Unbaked: the base with LeFT modulators attached (eval mode).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    st = TaskStore(store)
    check_task_name(name)
    st.info()
    meta = st.task_meta(name)
    base_path, _ = st.base_path(base)
    dev = resolve_device(device)
    G = load_generator(base_path, device=dev)
    path = st.task_dir(name) / MODULATORS_FILE
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as err:
        raise UserError(f"{path} is not a readable safetensors file ({err})") from None
    w_avg = tensors.pop(W_AVG_KEY, None)
    attach_left(G, LeFTConfig.from_dict(meta["config"]["left"]))
    load_left_state(G, tensors, where=str(path))
    G.eval().requires_grad_(False)
    if not baked:
        if w_avg is not None:
            G.mapping.w_avg.copy_(w_avg.to(dev))
        return G, meta
    return bake(G, w_avg), meta


def sample_task(store, name: str, n: int, seed: int = 0, truncation_psi: float = 1.0, base=None, device="cpu",
                batch: int = 64) -> torch.Tensor:
    """n samples [n, 3, R, R] in [-1, 1] of task `name` (baked generator, constant noise, latents from `seed`)."""
    G, _ = load_task_generator(store, name, base=base, device=device)
    return generate(G, n, seed, truncation_psi, batch)
