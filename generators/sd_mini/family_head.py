"""The family head: an evaluator that reads which style-family components an image carries.

One softmax head per group of `style_family.COMPONENTS` ("none" or one member), on the
evaluators' plain CNN (`generators.evaluators.EvaluatorNet`, narrower). It measures studio-mini
2's "style words read back" milestone: in samples of prompts that end in component words, the
share of named components the head finds. Measured on fresh renderings drawn as pretraining draws
them (a third plain, the rest with `style_family.sample_components`); trained on denser draws (each
group present half the time), every image a new draw of the mini world.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from generators import miniworld
from generators.config import command_line
from generators.evaluators import EvaluatorConfig, EvaluatorNet, load_evaluator, save_evaluator
from generators.run import Run, as_run
from generators.sd_mini import style_family as sf

DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "assets" / "family-head"
NONE = "none"
TRAIN_SEED, EVAL_SEED = 610_000, 930_000


def head_config() -> EvaluatorConfig:
    labels = {g: [NONE] + [c.name for c in sf.COMPONENTS if c.group == g] for g in sf.GROUPS}
    return EvaluatorConfig(labels=labels, widths=(16, 32, 64, 96, 128), spatial_channels=8, feature_dim=128)


def render(seed: int, index: int, size: int = 64, plain_share: float = 1 / 3,
           dense: bool = False) -> tuple[np.ndarray, tuple[str, ...]]:
    """One labelled rendering: a mini-world image with none or some components, drawn as
    pretraining draws them, or (dense, for training the head) each group present half the time,
    so that every component is seen often and in every combination."""
    rng = np.random.default_rng([seed, index])
    sample = miniworld.generate(seed, index, size=size, held_out=False, with_mask=True)
    if dense:
        names = []
        for g in sf.GROUPS:
            if rng.random() < 0.5:
                names.append(sf.draw_member(g, names, rng))
        names = tuple(names)
    else:
        names = () if rng.random() < plain_share else sf.sample_components(rng)
    return np.asarray(sf.apply_components(sample.image, names, rng, sample.mask), dtype=np.uint8), names


def labels_of(names, config: EvaluatorConfig) -> list[int]:
    return [next((config.labels[g].index(n) for n in names if n in config.labels[g]), 0) for g in config.labels]


def _batch(seed: int, start: int, n: int, config: EvaluatorConfig, dense: bool = False):
    rows = [render(seed, start + i, dense=dense) for i in range(n)]
    x = torch.from_numpy(np.stack([r[0] for r in rows])).permute(0, 3, 1, 2).float() / 127.5 - 1
    y = torch.tensor([labels_of(r[1], config) for r in rows])
    return x, y


@torch.no_grad()
def accuracy(net: EvaluatorNet, n: int = 1000) -> dict:
    """Per-group accuracy and the share of images read exactly, on fresh renderings (EVAL_SEED)."""
    net.eval()
    x, y = _batch(EVAL_SEED, 0, n, net.config)
    logits = net(x)
    pred = torch.stack([logits[g].argmax(1) for g in net.config.labels], 1)
    out = {f"{g}_accuracy": float((pred[:, i] == y[:, i]).float().mean()) for i, g in enumerate(net.config.labels)}
    out["exact_accuracy"] = float((pred == y).all(1).float().mean())
    named = y > 0
    out["named_component_recall"] = float(((pred == y) & named).sum() / named.sum())
    return out


def train(out_dir, seconds: float, batch: int = 64, lr: float = 2e-3, seed: int = 0, run: Run | None = None,
          resume: bool = False, n_eval: int = 1000) -> dict:
    """Train for about `seconds` (cosine lr over the budget), then measure and write `out_dir`.
    resume: start from the head already in out_dir (a new optimizer and schedule, fresh images);
    weights whose shape changed since (a group added to the family, a member added to a group)
    start fresh and are listed in training_options.json's "started_fresh".

    run (generators/run.py): progress in whole seconds of `seconds` (total = ceil(seconds); it
    reaches the total once the files are written), with `steps` and `loss` in info; should_stop()
    is polled at every step and ends training early: the head trained so far is still measured
    and written, and the returned accuracy dict is marked "stopped". log: a JSON line every 100
    steps."""
    run = as_run(run)
    total, reported = max(1, math.ceil(seconds)), 0
    torch.manual_seed(seed)
    config = head_config()
    net = EvaluatorNet(config)
    history = []
    fresh = []
    if resume:
        from generators.sd_mini.models import copy_matching_weights

        # a family grown by a group or member since: the trunk and the unchanged groups carry over
        _, fresh = copy_matching_weights(load(out_dir).net, net)
        options = json.loads((Path(out_dir) / "training_options.json").read_text())
        history = options.pop("history", []) + [options]
        seed = seed + len(history)  # fresh images
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    start, step, stopped = time.time(), 0, False
    while time.time() - start < seconds:
        if run.should_stop():
            stopped = True
            break
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + np.cos(np.pi * min(1.0, (time.time() - start) / seconds)))
        net.train()
        x, y = _batch(TRAIN_SEED + 1000 * seed, step * batch, batch, config, dense=True)
        logits = net(x)
        loss = sum(F.cross_entropy(logits[g], y[:, i]) for i, g in enumerate(config.labels))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 100 == 0:
            run.log(json.dumps({"step": step, "loss": round(float(loss), 4), "seconds": round(time.time() - start)}))
        if step % 10 == 0 or step == 1:
            reported = max(reported, min(total - 1, int(time.time() - start)))
            run.progress(reported, total, steps=step, loss=float(loss.detach()))
    acc = accuracy(net, n_eval)
    save_evaluator(net, out_dir)
    options = {"command": command_line(), "seconds": seconds, "steps": step, "images_seen": step * batch, "batch": batch, "lr": lr, "seed": seed,
               "images_seen_total": step * batch + sum(h["images_seen"] for h in history), "started_fresh": fresh,
               "accuracy_on_fresh_renderings": acc, "history": history, "stopped_early": stopped}
    (Path(out_dir) / "training_options.json").write_text(json.dumps(options, indent=2) + "\n")
    run.progress(total, total, steps=step)
    return {**acc, "stopped": True} if stopped else acc


def load(folder=None):
    """The family head as an `Evaluator` (predict(images) -> {group: [component or "none"]})."""
    return load_evaluator(folder or DEFAULT_FOLDER)


def components_found(predicted: dict[str, list[str]], index: int) -> set[str]:
    return {predicted[g][index] for g in predicted} - {NONE}
