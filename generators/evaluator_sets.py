"""The evaluators' labelled mini-world sets: rendering them, and measuring accuracy per head on them.

A set is rendered from *jobs* (:func:`render_jobs`: a world seed, a range of indices, the
kinds and scales to draw, a style mode) by :func:`render_set`, in a process pool when there
are enough CPUs, into uint8 images and int16 labels (-1 where a head does not apply; the
heads and their rules are in generators/evaluators.py). Training and accuracy measurement
draw from disjoint world-seed ranges (:data:`TRAIN_WORLD_SEED`, :data:`EVAL_WORLD_SEED`), in
separate streams for the whole world, medium/large birds (the subclass head) and styled
images. :func:`measure_accuracy` scores a network on the sets of :func:`eval_jobs`.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

import numpy as np
import torch

from generators import miniworld
from generators.evaluators import HEADS, IMAGE_SIZE, EvaluatorConfig, EvaluatorNet

# Mini-world seeds: training and accuracy measurement draw from disjoint streams.
TRAIN_WORLD_SEED = 510_000
EVAL_WORLD_SEED = 920_000
STREAM_MAIN, STREAM_BIRDS, STREAM_STYLED = 0, 1, 2
SUBCLASS_SCALES = ("medium", "large")


def _render_chunk(job: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Render images [start, start+count) of one stream -> (uint8 N x 64 x 64 x 3, int16 N x len(HEADS)).

    job = (world_seed, start, count, kinds, scales, style_mode, labels) where style_mode is
    "half" (half plain, half a random reference style), "all" (uniform over plain + styles)
    or "plain". Labels are -1 where a head does not apply.
    """
    from styles.reference import COLOR_PRESERVING, PLAIN, REFERENCE_STYLES, apply_style

    world_seed, start, count, kinds, scales, style_mode, labels = job
    index = {h: {name: i for i, name in enumerate(names)} for h, names in labels.items()}
    images = np.empty((count, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    out = np.full((count, len(HEADS)), -1, np.int16)
    for j in range(count):
        i = start + j
        sample = miniworld.generate(world_seed, i, size=IMAGE_SIZE, kinds=kinds, scales=scales)
        rng = np.random.default_rng([world_seed, i, 77])
        if style_mode == "plain":
            style = PLAIN
        elif style_mode == "half":
            style = PLAIN if rng.random() < 0.5 else REFERENCE_STYLES[rng.integers(len(REFERENCE_STYLES))]
        else:
            names = (PLAIN, *REFERENCE_STYLES)
            style = names[rng.integers(len(names))]
        image = sample.image if style == PLAIN else apply_style(style, sample.image, seed=int(rng.integers(2**31)))
        images[j] = np.asarray(image, dtype=np.uint8)
        attrs = sample.attributes
        for h_i, head in enumerate(HEADS):
            if head == "style":
                value = style
            elif head == "subclass":
                value = attrs.subclass if attrs.kind == "bird" and attrs.scale in SUBCLASS_SCALES else None
            elif head == "color":
                value = attrs.color if style == PLAIN or style in COLOR_PRESERVING else None
            else:
                value = getattr(attrs, head)
            if value is not None:
                out[j, h_i] = index[head][value]
    return images, out


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def render_set(jobs: list[tuple], until: Callable[[], bool] | None = None,
               on_chunk: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run render jobs (a Pool when >= 4 CPUs and enough work, else a plain loop).

    After every chunk: on_chunk(images in that chunk), then, if until() is true, stop early,
    keeping what is done (training sets are cut at the time budget or a stop request)."""
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    n_cpu = available_cpus()
    if n_cpu >= 4 and sum(j[2] for j in jobs) >= 2000:
        import multiprocessing as mp

        ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with ctx.Pool(min(n_cpu, 32)) as pool:
            for part in pool.imap(_render_chunk, jobs):
                parts.append(part)
                if on_chunk:
                    on_chunk(len(part[0]))
                if until is not None and until():
                    pool.terminate()
                    break
    else:
        for job in jobs:
            parts.append(_render_chunk(job))
            if on_chunk:
                on_chunk(len(parts[-1][0]))
            if until is not None and until():
                break
    if not parts:
        return np.empty((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8), np.empty((0, len(HEADS)), np.int16)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def render_jobs(world_seed: int, n: int, chunk: int, labels: dict, kinds=miniworld.KINDS, scales=None, style_mode="half"):
    """Images [0, n) of one world seed as jobs of `chunk` images (see :func:`_render_chunk`)."""
    return [(world_seed, s, min(chunk, n - s), tuple(kinds), scales, style_mode, labels) for s in range(0, n, chunk)]


def interleave(jobs_a: list, jobs_b: list) -> list:
    """Mix two job lists evenly, so a render cut short keeps both streams."""
    out, ia, ib = [], 0, 0
    total = len(jobs_a) + len(jobs_b)
    while ia + ib < total:
        if ib >= len(jobs_b) or (ia < len(jobs_a) and ia * len(jobs_b) <= ib * len(jobs_a)):
            out.append(jobs_a[ia])
            ia += 1
        else:
            out.append(jobs_b[ib])
            ib += 1
    return out


def eval_jobs(labels: dict, seed: int, n_plain: int, n_birds: int, n_styled: int, chunk: int = 250) -> dict[str, list]:
    """Fresh renderings for the accuracy pass, from the EVAL_WORLD_SEED range."""
    base = EVAL_WORLD_SEED + 10 * seed
    return {
        "plain": render_jobs(base + STREAM_MAIN, n_plain, chunk, labels, style_mode="plain"),
        "birds": render_jobs(base + STREAM_BIRDS, n_birds, chunk, labels, kinds=("bird",), scales=SUBCLASS_SCALES, style_mode="plain"),
        "styled": render_jobs(base + STREAM_STYLED, n_styled, chunk, labels, style_mode="all"),
    }


# --- accuracy -----------------------------------------------------------------------------------


@torch.no_grad()
def _predict_u8(net: EvaluatorNet, images: np.ndarray | torch.Tensor, device: torch.device, batch: int = 512,
                autocast_dtype=None) -> dict[str, torch.Tensor]:
    net.eval()
    preds: dict[str, list[torch.Tensor]] = {h: [] for h in net.config.labels}
    data = torch.as_tensor(images)
    for i in range(0, len(data), batch):
        x = data[i:i + batch].to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = net(x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x)
        for h, v in out.items():
            preds[h].append(v.argmax(-1).cpu())
    return {h: torch.cat(v) if v else torch.empty(0, dtype=torch.long) for h, v in preds.items()}


def _acc(pred: torch.Tensor, target: np.ndarray, mask: np.ndarray | None = None) -> float | None:
    target_t = torch.as_tensor(target.astype(np.int64))
    keep = target_t >= 0
    if mask is not None:
        keep &= torch.as_tensor(mask)
    if int(keep.sum()) == 0:
        return None
    return round(float((pred[keep] == target_t[keep]).float().mean()), 4)


def facing_invisible(y: np.ndarray, config: EvaluatorConfig) -> np.ndarray:
    """Rows whose kind is drawn mirror-symmetric (facing cannot be seen)."""
    ids = [config.labels["kind"].index(k) for k in config.facing_invisible_kinds]
    return np.isin(y[:, HEADS.index("kind")], ids)


def measure_accuracy(net: EvaluatorNet, sets: dict[str, tuple[np.ndarray, np.ndarray]], device: torch.device,
                     autocast_dtype=None) -> dict:
    """Accuracy per head on the evaluation sets from :func:`eval_jobs`:
    attribute heads on plain renderings, subclass on plain medium/large birds, style on
    renderings with a random style (plain included), plus kind (and colour, where the
    style keeps it) on the styled ones and per-style accuracy of the style head.
    ``facing`` and ``tilt`` count kinds whose facing is visible; ``*_all`` every kind."""
    col = {h: i for i, h in enumerate(HEADS)}
    result: dict = {}
    counts: dict = {}
    plain_x, plain_y = sets["plain"]
    if len(plain_x):
        p = _predict_u8(net, plain_x, device, autocast_dtype=autocast_dtype)
        visible = ~facing_invisible(plain_y, net.config)
        for head in HEADS:
            if head not in ("subclass", "style"):
                result[head] = _acc(p[head], plain_y[:, col[head]])
        for head in ("facing", "tilt"):
            result[f"{head}_all"] = result[head]
            result[head] = _acc(p[head], plain_y[:, col[head]], visible)
        counts["plain"] = len(plain_x)
    birds_x, birds_y = sets["birds"]
    if len(birds_x):
        p = _predict_u8(net, birds_x, device, autocast_dtype=autocast_dtype)
        result["subclass"] = _acc(p["subclass"], birds_y[:, col["subclass"]])
        counts["birds"] = len(birds_x)
    styled_x, styled_y = sets["styled"]
    if len(styled_x):
        p = _predict_u8(net, styled_x, device, autocast_dtype=autocast_dtype)
        style_col = styled_y[:, col["style"]]
        result["style"] = _acc(p["style"], style_col)
        not_plain = style_col != 0  # index 0 is "plain"
        result["kind_styled"] = _acc(p["kind"], styled_y[:, col["kind"]], not_plain)
        result["color_styled"] = _acc(p["color"], styled_y[:, col["color"]], not_plain)
        visible = ~facing_invisible(styled_y, net.config)
        for head in ("background", "position", "scale", "tilt", "facing"):
            mask = not_plain & visible if head in ("tilt", "facing") else not_plain
            result[f"{head}_styled"] = _acc(p[head], styled_y[:, col[head]], mask)
        result["style_per_class"] = {
            name: _acc(p["style"], style_col, style_col == i) for i, name in enumerate(net.config.labels["style"])
        }
        result["kind_per_style"] = {
            name: _acc(p["kind"], styled_y[:, col["kind"]], style_col == i) for i, name in enumerate(net.config.labels["style"])
        }
        counts["styled"] = len(styled_x)
    result["n"] = counts
    return result
