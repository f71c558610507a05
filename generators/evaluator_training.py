"""Training the evaluators (`studio pretrain evaluators`) for a wall-time budget.

:func:`train_evaluators` pre-renders a set (half plain, half in a random reference style,
plus extra medium/large birds for the subclass head; generators/evaluator_sets.py), trains
:class:`~generators.evaluators.EvaluatorNet` with AdamW and a time-based warmup + cosine
schedule until the time budget is spent, measures accuracy per head on fresh renderings from
a different seed range and writes ``evaluator.safetensors``, ``config.json``,
``accuracy.json`` and ``training_options.json``. The loss is the sum over heads of the mean
cross-entropy over the rows where the head applies (:func:`_loss`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from generators.config import command_line
from generators.diffusion import resolve_device
from generators.errors import UserError
from generators.evaluator_sets import (
    EVAL_WORLD_SEED,
    STREAM_BIRDS,
    STREAM_MAIN,
    SUBCLASS_SCALES,
    TRAIN_WORLD_SEED,
    available_cpus,
    eval_jobs,
    facing_invisible,
    interleave,
    measure_accuracy,
    render_jobs,
    render_set,
)
from generators.evaluators import HEADS, EvaluatorConfig, EvaluatorNet, count_parameters, save_evaluator
from generators.precision import amp_dtype, autocast
from generators.run import Run, as_run

ACCURACY_FILE = "accuracy.json"
OPTIONS_FILE = "training_options.json"
PRECISIONS = ("fp32", "bf16")


def _augment(x: torch.Tensor, max_shift: int = 2) -> torch.Tensor:
    """Random integer translation by up to `max_shift` px (edges replicated). No flips:
    facing is a label; no colour jitter: colour is a label."""
    b = x.shape[0]
    shift = torch.randint(-max_shift, max_shift + 1, (b, 2), device=x.device).float() * (2.0 / x.shape[-1])
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0] = 1
    theta[:, 1, 1] = 1
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _loss(logits: dict[str, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """Sum over heads of the mean cross-entropy over the rows where the head applies (label >= 0)."""
    total = 0.0
    for h_i, head in enumerate(HEADS):
        target = y[:, h_i]
        n = (target >= 0).sum()
        ce = F.cross_entropy(logits[head].float(), target, ignore_index=-1, reduction="sum")
        total = total + ce / n.clamp(min=1)
    return total


def train_evaluators(
    out_dir: str | Path,
    seconds: float,
    device: str = "auto",
    precision: str = "fp32",
    seed: int = 0,
    n_train: int = 100_000,
    run: Run | None = None,
    *,
    bird_fraction: float = 0.2,
    n_eval: int = 2000,
    n_eval_birds: int = 1000,
    n_eval_styled: int = 2000,
    batch_size: int | None = None,
    lr: float | None = None,
    augment: bool = True,
    render_fraction: float = 0.4,
    config: EvaluatorConfig | None = None,
    ignore_heads: tuple[str, ...] = (),
) -> dict:
    """Train the evaluator for about `seconds` of wall time in total and write it to `out_dir`.

    Steps: render the accuracy sets (fresh, EVAL_WORLD_SEED range) and the training set
    (`n_train` images: `1 - bird_fraction` of them from the whole world, `bird_fraction`
    medium/large birds; each half plain, half a random reference style). Rendering the
    training set stops early, keeping what it has, once `render_fraction` of the budget is
    spent. Then AdamW with a warmup + cosine schedule over the remaining time (minus a
    reserve for the accuracy pass), the accuracy pass, and the files: evaluator.safetensors,
    config.json, accuracy.json, training_options.json. Returns the accuracy dict.

    run (generators/run.py): one progress over the whole call, in whole seconds of the budget
    (total = ceil(`seconds`), rendering included; done is the wall time spent, held below the
    total until the call returns, when it reaches it, also on a stop). info names the `phase`:
    "render" (with `images` rendered of `planned`: accuracy sets + `n_train`), then "train"
    (with `steps` and `loss`; the accuracy pass and the files are its end). should_stop() is
    polled between chunks of the training set's render and at every training step; it ends
    training early, and the model trained so far is still measured and written, the returned
    dict marked "stopped" (accuracy.json is as always). A stop before the first training step
    writes nothing and returns {"stopped": True}. log(message): a line after rendering and after
    training.

    ignore_heads: heads that get no loss (their labels hidden), e.g. ("subclass",) for a backbone
    that knows the world but not the bird subclasses (bench/synthetic.py's classifier); their
    accuracy is still measured, and stays at chance.
    """
    run = as_run(run)
    t0 = time.time()
    if seconds <= 0:
        raise UserError(f"seconds must be positive, got {seconds}")
    if n_train < 1:
        raise UserError(f"n_train must be at least 1, got {n_train}")
    unknown = [h for h in ignore_heads if h not in HEADS]
    if unknown:
        raise UserError(f"unknown head {unknown[0]!r}; heads are {', '.join(HEADS)}")
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    dev = resolve_device(device)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    np.random.seed(seed)
    config = config or EvaluatorConfig.default()
    labels = config.labels

    # 1. render: accuracy sets first (always complete), then the training set (may be cut short)
    sets_jobs = eval_jobs(labels, seed, n_eval, n_eval_birds, n_eval_styled)
    n_eval_total = n_eval + n_eval_birds + n_eval_styled
    n_birds = int(round(n_train * bird_fraction))
    base = TRAIN_WORLD_SEED + 10 * seed
    chunk = max(50, min(500, n_train // 64 or 1))
    train_jobs = interleave(render_jobs(base + STREAM_MAIN, n_train - n_birds, chunk, labels),
                            render_jobs(base + STREAM_BIRDS, n_birds, chunk, labels, kinds=("bird",), scales=SUBCLASS_SCALES))
    render_total = n_eval_total + n_train
    rendered = [0]
    total = max(1, math.ceil(seconds))  # the call's one progress: whole seconds of its budget
    reported = [0]

    def report(phase: str, **info) -> None:
        reported[0] = max(reported[0], min(total - 1, int(time.time() - t0)))  # total only at the end
        run.progress(reported[0], total, phase=phase, **info)

    def finish(phase: str, **info) -> None:
        run.progress(total, total, phase=phase, **info)

    def rendered_chunk(n: int) -> None:
        rendered[0] += n
        report("render", images=rendered[0], planned=render_total)

    all_x, all_y = render_set([job for jobs in sets_jobs.values() for job in jobs], on_chunk=rendered_chunk)
    eval_sets, start = {}, 0
    for name, jobs in sets_jobs.items():
        stop = start + sum(job[2] for job in jobs)
        eval_sets[name] = (all_x[start:stop], all_y[start:stop])
        start = stop
    render_deadline = t0 + render_fraction * seconds
    train_x, train_y = render_set(train_jobs, until=lambda: time.time() > render_deadline or run.should_stop(),
                                  on_chunk=rendered_chunk)
    if len(train_x) == 0 and run.should_stop():
        finish("render", images=rendered[0], planned=render_total)
        return {"stopped": True}
    if len(train_x) == 0:
        raise UserError(f"no training images were rendered within the time budget of {seconds} s; raise --seconds")
    # facing is invisible on mirror-symmetric kinds: no facing loss there
    train_y[facing_invisible(train_y, config), HEADS.index("facing")] = -1
    for head in ignore_heads:
        train_y[:, HEADS.index(head)] = -1
    render_s = time.time() - t0
    render_rate = (len(train_x) + n_eval_total) / max(render_s, 1e-6)
    run.log(f"rendered {len(train_x)} training and {n_eval_total} accuracy images in {render_s:.0f} s")

    # 2. train
    use_cuda = dev.type == "cuda"
    if use_cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    batch_size = batch_size or (512 if use_cuda else 128)
    batch_size = min(batch_size, len(train_x))
    peak_lr = lr or (3e-3 if batch_size >= 512 else 1.5e-3)
    memory_format = torch.channels_last if use_cuda else torch.contiguous_format  # channels_last is slower on CPU
    net = EvaluatorNet(config).to(dev).to(memory_format=memory_format)
    decay = [p for n, p in net.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in net.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=peak_lr, betas=(0.9, 0.99), **({"fused": True} if use_cuda else {}))
    data = torch.from_numpy(train_x).to(dev)  # uint8 N x 64 x 64 x 3 stays on the device
    targets = torch.from_numpy(train_y.astype(np.int64)).to(dev)
    n = len(data)
    gen = torch.Generator(device=dev).manual_seed(seed)

    train_start = time.time()
    eval_reserve = 2.0 + n_eval_total * 0.002  # refined below from the measured step time
    deadline = t0 + seconds - eval_reserve
    step, seen, last_loss, losses = 0, 0, float("nan"), []
    perm, pos = torch.randperm(n, device=dev, generator=gen), 0
    stopped_early = False
    net.train()
    while True:
        now = time.time()
        if step > 0 and now >= deadline:
            break
        if run.should_stop():
            stopped_early = True
            break
        frac = min(1.0, (now - train_start) / max(deadline - train_start, 1e-6))
        warm = 0.03
        scale = frac / warm if frac < warm else 0.5 * (1 + math.cos(math.pi * (frac - warm) / (1 - warm)))
        for g in opt.param_groups:
            g["lr"] = peak_lr * max(scale, 0.01)
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, device=dev, generator=gen), 0
        idx = perm[pos:pos + batch_size]
        pos += batch_size
        x = data[idx].permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        if augment:
            x = _augment(x)
        x = x.contiguous(memory_format=memory_format)
        y = targets[idx]
        with autocast(dev, precision):
            logits = net(x)
        loss = _loss(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        seen += len(idx)
        if step % 25 == 0 or step <= 2:
            last_loss = float(loss.detach())  # syncs the GPU only every 25 steps
            losses.append((step, round(time.time() - train_start, 2), round(last_loss, 4)))
            # forward of the accuracy sets is ~1/3 of a training step's time per image, plus slack
            per_image = (time.time() - train_start) / max(seen, 1)
            eval_reserve = 2.0 + 1.5 * n_eval_total * per_image / 3
            deadline = t0 + seconds - eval_reserve
            report("train", steps=step, loss=last_loss)
    if use_cuda:
        torch.cuda.synchronize()
    train_s = time.time() - train_start
    if step == 0:  # stopped before training: nothing worth writing
        finish("train", steps=0, loss=last_loss)
        return {"stopped": True}
    run.log(f"trained {step} steps in {train_s:.0f} s" + (" (stopped early)" if stopped_early else ""))

    # 3. measure on fresh renderings, write
    accuracy = measure_accuracy(net, eval_sets, dev, autocast_dtype=amp_dtype(precision))
    net.eval()
    save_evaluator(net.to("cpu").to(memory_format=torch.contiguous_format), out_dir)
    (out_dir / ACCURACY_FILE).write_text(json.dumps(accuracy, indent=2) + "\n")
    device_name = torch.cuda.get_device_name(dev) if use_cuda else "cpu"
    options = {
        "options": {
            "seconds": seconds, "device": device, "precision": precision, "seed": seed, "n_train": n_train,
            "bird_fraction": bird_fraction, "n_eval": n_eval, "n_eval_birds": n_eval_birds,
            "n_eval_styled": n_eval_styled, "batch_size": batch_size, "lr": peak_lr, "augment": augment,
            "render_fraction": render_fraction, "ignore_heads": list(ignore_heads), "weight_decay": 0.05, "schedule": "time-based warmup 3% + cosine",
        },
        "n_train_rendered": int(len(train_x)),
        "wall_time_s": round(time.time() - t0, 2),
        "render_s": round(render_s, 2),
        "render_images_per_s": round(render_rate, 1),
        "train_s": round(train_s, 2),
        "steps": step,
        "epochs": round(seen / n, 2),
        "train_images_per_s": round(seen / max(train_s, 1e-6), 1),
        "stopped_early": stopped_early,
        "final_loss": last_loss,
        "loss_curve": losses[:: max(1, len(losses) // 50)],
        "device": str(dev),
        "device_name": device_name,
        "torch": torch.__version__,
        "cpu_count": available_cpus(),
        "parameters": count_parameters(net),
        "command": command_line(),
        "world_seeds": {"train": base, "eval": EVAL_WORLD_SEED + 10 * seed},
    }
    (out_dir / OPTIONS_FILE).write_text(json.dumps(options, indent=2) + "\n")
    finish("train", steps=step, loss=last_loss)
    return {**accuracy, "stopped": True} if stopped_early else accuracy
