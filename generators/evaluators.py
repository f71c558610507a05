"""The evaluators: small classifiers trained on mini-world renderings.

They are the project's offline stand-in for CLIP / Inception: one multi-head CNN
(:class:`EvaluatorNet`, ~1.6 M parameters, 64x64 RGB input) reads an image and predicts
every mini-world attribute plus the reference style it is drawn in. Besides per-head
predictions it gives penultimate features (for a mini FID, :func:`mini_fid`) and an
LPIPS-like :meth:`Evaluator.perceptual_distance`.

Heads and where their labels apply (the training losses are masked the same way):

* ``kind`` (11), ``background`` (8), ``position`` (9), ``scale`` (3), ``tilt`` (3): every
  image, plain or styled.
* ``facing`` (2): every image except kinds with a mirror-symmetric silhouette (star, heart,
  tree: see :func:`mirror_symmetric_kinds`). The mini world draws a left-facing object as
  the mirror image of the right-facing one, so for these kinds facing cannot be seen at
  all, and their tilt label is only half visible: "facing right, tilted left" is the very
  same picture as "facing left, tilted right" (upright vs tilted is visible). The headline
  ``facing`` and ``tilt`` accuracies are therefore measured on the other kinds;
  ``facing_all`` / ``tilt_all`` on every kind (ceilings about 0.86 / 0.91).
* ``color`` (8): plain images and styles in ``styles.reference.COLOR_PRESERVING`` only
  (after e.g. sepia or thermal the hue is gone).
* ``subclass`` (12): birds only, and only medium and large ones: the fine-grained parts
  (beak, tail, crest, wing stripes) are a pixel or two wide on a small bird at 64 px.
  "Clean renderings" for the subclass head therefore means **plain medium/large birds**;
  its prediction on anything else (another kind, a small bird) is meaningless.
* ``style`` (``"plain"`` + the reference styles): every image.

Training (:func:`train_evaluators`) pre-renders a set (half plain, half in a random
reference style, plus extra medium/large birds for the subclass head), trains with AdamW
and a time-based warmup + cosine schedule until the time budget is spent, measures
accuracy per head on fresh renderings from a different seed range and writes
``evaluator.safetensors``, ``config.json``, ``accuracy.json`` and ``training_options.json``.

Weights are read with safetensors only; nothing here unpickles files.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from generators.config import SavedConfig
from generators import miniworld
from generators.diffusion import resolve_device
from generators.errors import UserError

IMAGE_SIZE = 64
DEFAULT_FOLDER = Path(__file__).resolve().parents[1] / "assets" / "evaluators"
WEIGHTS_FILE = "evaluator.safetensors"
CONFIG_FILE = "config.json"
ACCURACY_FILE = "accuracy.json"
OPTIONS_FILE = "training_options.json"
HEADS = ("kind", "subclass", "color", "background", "position", "scale", "tilt", "facing", "style")
PRECISIONS = ("fp32", "bf16")

# Mini-world seeds: training and accuracy measurement draw from disjoint streams.
TRAIN_WORLD_SEED = 510_000
EVAL_WORLD_SEED = 920_000
_STREAM_MAIN, _STREAM_BIRDS, _STREAM_STYLED = 0, 1, 2
SUBCLASS_SCALES = ("medium", "large")


# --- the network ---------------------------------------------------------------------------


@dataclass
class EvaluatorConfig(SavedConfig):
    """Architecture and label spaces; saved as config.json and in the weights' metadata."""

    IGNORE_UNKNOWN = True  # keys a newer Studio added are dropped: the weights' file decides what loads

    labels: dict[str, list[str]] = field(default_factory=dict)  # head -> class names, in HEADS order
    widths: tuple[int, ...] = (32, 48, 96, 160, 256)  # stem, then four stride-2 stages
    spatial_channels: int = 32  # 1x1 conv before a 3x3 pooled map (keeps "where" for position)
    feature_dim: int = 256  # penultimate features (mini FID)
    image_size: int = IMAGE_SIZE
    facing_invisible_kinds: list[str] = field(default_factory=list)  # facing loss masked, not scored

    @classmethod
    def default(cls) -> "EvaluatorConfig":
        from styles.reference import PLAIN, REFERENCE_STYLES

        vocab = miniworld.attribute_vocabulary()
        labels = {head: list(vocab[head]) for head in HEADS if head != "style"}
        labels["style"] = [PLAIN, *REFERENCE_STYLES]
        return cls(labels={head: labels[head] for head in HEADS}, facing_invisible_kinds=list(mirror_symmetric_kinds()))


def mirror_symmetric_kinds() -> tuple[str, ...]:
    """Kinds whose drawing is its own mirror image, part by part (so facing is invisible).

    Read off the mini world's shape polygons: every part, mirrored (x -> -x), must cover the
    same points. Flower petals form a symmetric set, but each petal is not symmetric and
    their overlap order shows the facing, so flower is not listed.
    """
    out = []
    for kind in miniworld.KINDS:
        attrs = miniworld.Attributes(kind, "red", "sky", "center", "large", "upright", "right",
                                     next(iter(miniworld.BIRD_SUBCLASSES)) if kind == "bird" else None)
        symmetric = True
        for _, poly in miniworld._shape(attrs):
            pts = np.asarray(poly, dtype=np.float64)
            mirrored = pts * np.array([-1.0, 1.0])
            dist = np.sqrt(((mirrored[:, None, :] - pts[None, :, :]) ** 2).sum(-1)).min(1)
            if dist.max() > 1e-6:
                symmetric = False
                break
        if symmetric:
            out.append(kind)
    return tuple(out)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class EvaluatorNet(nn.Module):
    """Plain CNN: a full-resolution stem, four stride-2 stages (two 3x3 convs each), then
    global average pooling concatenated with a coarse 3x3 map, one hidden layer (the
    features) and a linear head per attribute. Input: B x 3 x 64 x 64 in [-1, 1]."""

    def __init__(self, config: EvaluatorConfig):
        super().__init__()
        self.config = config
        w = config.widths
        self.stem = _conv(3, w[0])
        self.stages = nn.ModuleList(nn.Sequential(_conv(w[i - 1], w[i], 2), _conv(w[i], w[i])) for i in range(1, len(w)))
        self.spatial = nn.Sequential(nn.Conv2d(w[-1], config.spatial_channels, 1), nn.ReLU(inplace=True))
        self.neck = nn.Sequential(nn.Linear(w[-1] + 9 * config.spatial_channels, config.feature_dim), nn.ReLU(inplace=True))
        self.heads = nn.ModuleDict({h: nn.Linear(config.feature_dim, len(names)) for h, names in config.labels.items()})

    def stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations after the stem and after each stage (for the perceptual distance)."""
        outs = [self.stem(x)]
        for stage in self.stages:
            outs.append(stage(outs[-1]))
        return outs

    def _features_from(self, last: torch.Tensor) -> torch.Tensor:
        pooled = last.mean((2, 3))
        where = F.adaptive_avg_pool2d(self.spatial(last), 3).flatten(1)
        return self.neck(torch.cat([pooled, where], 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self._features_from(self.stage_outputs(x)[-1])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.features(x)
        return {h: head(feats) for h, head in self.heads.items()}


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# --- the evaluator (inference API) ------------------------------------------------------------


def _pil_batch(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    arrays = []
    for im in images:
        if not isinstance(im, Image.Image):
            raise TypeError(f"images must be PIL images or a float tensor, got {type(im).__name__}")
        im = im.convert("RGB") if im.mode != "RGB" else im
        if im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        arrays.append(np.asarray(im, dtype=np.uint8))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # uint8 B x 3 x H x W


class Evaluator:
    """A trained :class:`EvaluatorNet` in eval mode, with label names.

    Every method takes ``images`` as a list of PIL images (any size, resized to 64x64) or
    a float tensor B x 3 x H x W in [-1, 1], and works in batches of ``batch_size``.
    """

    def __init__(self, net: EvaluatorNet, config: EvaluatorConfig, device: str | torch.device = "cpu", batch_size: int = 256):
        self.device = resolve_device(device)
        self.net = net.to(self.device).eval()
        self.config = config
        self.labels = config.labels
        self.batch_size = batch_size

    def _chunks(self, images):
        """Yield float tensors on the device, B x 3 x 64 x 64 in [-1, 1]."""
        size = self.config.image_size
        if isinstance(images, torch.Tensor):
            if images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(f"image tensor must be B x 3 x H x W, got shape {tuple(images.shape)}")
            for i in range(0, images.shape[0], self.batch_size):
                x = images[i:i + self.batch_size].to(self.device, torch.float32)
                if x.shape[-2:] != (size, size):
                    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
                yield x
            return
        if isinstance(images, Image.Image):
            images = [images]
        images = list(images)
        for i in range(0, len(images), self.batch_size):
            u8 = _pil_batch(images[i:i + self.batch_size], size).to(self.device)
            yield u8.float().div_(127.5).sub_(1.0)

    @torch.no_grad()
    def logits(self, images) -> dict[str, torch.Tensor]:
        outs: dict[str, list[torch.Tensor]] = {h: [] for h in self.labels}
        for x in self._chunks(images):
            for h, v in self.net(x).items():
                outs[h].append(v.float().cpu())
        return {h: torch.cat(v) if v else torch.empty(0, len(self.labels[h])) for h, v in outs.items()}

    def probabilities(self, images) -> dict[str, torch.Tensor]:
        """Softmax per head: {head: B x n_classes} (CPU tensors)."""
        return {h: v.softmax(-1) for h, v in self.logits(images).items()}

    def predict(self, images) -> dict[str, list[str]]:
        """Most likely class name per head and image. `subclass` is only meaningful for
        medium/large birds, `color` only for plain or colour-preserving styles, and
        `facing` not for the kinds in ``config.facing_invisible_kinds``."""
        return {h: [self.labels[h][i] for i in v.argmax(-1).tolist()] for h, v in self.logits(images).items()}

    @torch.no_grad()
    def features(self, images) -> torch.Tensor:
        """Penultimate features, B x feature_dim (CPU, float32), for :func:`mini_fid`."""
        feats = [self.net.features(x).float().cpu() for x in self._chunks(images)]
        return torch.cat(feats) if feats else torch.empty(0, self.config.feature_dim)

    @torch.no_grad()
    def perceptual_distance(self, a, b) -> torch.Tensor:
        """LPIPS-like distance per pair (B,): at the stem and every stage, unit-normalise the
        activations along channels, take the squared difference summed over channels,
        average it over space, then average over the stages. 0 for identical images,
        symmetric, at most 4."""
        n_a = a.shape[0] if isinstance(a, torch.Tensor) else len([a] if isinstance(a, Image.Image) else a)
        n_b = b.shape[0] if isinstance(b, torch.Tensor) else len([b] if isinstance(b, Image.Image) else b)
        if n_a != n_b:
            raise ValueError(f"perceptual_distance needs as many images in a as in b, got {n_a} and {n_b}")
        out = []
        for xa, xb in zip(self._chunks(a), self._chunks(b)):
            n = xa.shape[0]
            stages = self.net.stage_outputs(torch.cat([xa, xb]))
            total = torch.zeros(n, device=xa.device)
            for act in stages:
                act = act.float()
                act = act / (act.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                total += (act[:n] - act[n:]).pow(2).sum(1).mean((1, 2))
            out.append((total / len(stages)).cpu())
        return torch.cat(out) if out else torch.empty(0)


def load_evaluator(folder: str | Path | None = None, device: str = "cpu") -> Evaluator:
    """Load ``folder/evaluator.safetensors`` (+ config.json); default folder: assets/evaluators."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    folder = Path(folder) if folder is not None else DEFAULT_FOLDER
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"no evaluator at {weights}; train one with `studio pretrain evaluators --out {folder}`")
    config_path = folder / CONFIG_FILE
    if config_path.is_file():
        config = EvaluatorConfig.from_dict(json.loads(config_path.read_text()))
    else:
        with safe_open(str(weights), framework="pt") as f:
            meta = f.metadata() or {}
        if "config" not in meta:
            raise FileNotFoundError(f"no {CONFIG_FILE} next to {weights} and no config in its metadata")
        config = EvaluatorConfig.from_dict(json.loads(meta["config"]))
    net = EvaluatorNet(config)
    net.load_state_dict(load_file(str(weights), device="cpu"))
    return Evaluator(net, config, device=device)


def save_evaluator(net: EvaluatorNet, folder: str | Path) -> None:
    from generators.files import save_tensors

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config_json = json.dumps(asdict(net.config), indent=2)
    state = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
             for k, v in net.state_dict().items()}
    save_tensors(state, str(folder / WEIGHTS_FILE), metadata={"config": config_json, "format": "pt"})
    (folder / CONFIG_FILE).write_text(config_json + "\n")


# --- distances ----------------------------------------------------------------------------------


def _sqrtm_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(feats_a, feats_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N x D each):
    |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2), matrix roots by
    symmetric eigendecomposition (float64)."""
    a = np.asarray(feats_a.detach().cpu() if isinstance(feats_a, torch.Tensor) else feats_a, dtype=np.float64)
    b = np.asarray(feats_b.detach().cpu() if isinstance(feats_b, torch.Tensor) else feats_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be N x D with the same D, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("frechet_distance needs at least 2 samples per set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _sqrtm_psd(cov_a)
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    tr_cross = np.sqrt(np.clip(cross, 0, None)).sum()
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_cross)
    return max(value, 0.0)


def mini_fid(evaluator: Evaluator, images_a, images_b) -> float:
    """Fréchet distance between the evaluator's features of two image sets."""
    return frechet_distance(evaluator.features(images_a), evaluator.features(images_b))


# --- rendering training / evaluation sets -------------------------------------------------------


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


def _workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def render_set(jobs: list[tuple], deadline: float | None = None, progress=None, total: int | None = None,
               done: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Run render jobs (a Pool when >= 4 CPUs and enough work, else a plain loop), stopping
    early (keeping what is done) once `deadline` (time.time()) has passed."""
    total = total or sum(j[2] for j in jobs)
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    n_cpu = _workers()
    if n_cpu >= 4 and sum(j[2] for j in jobs) >= 2000:
        import multiprocessing as mp

        ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with ctx.Pool(min(n_cpu, 32)) as pool:
            for part in pool.imap(_render_chunk, jobs):
                parts.append(part)
                done += len(part[0])
                if progress:
                    progress(done, total, phase="render")
                if deadline is not None and time.time() > deadline:
                    pool.terminate()
                    break
    else:
        for job in jobs:
            parts.append(_render_chunk(job))
            done += len(parts[-1][0])
            if progress:
                progress(done, total, phase="render")
            if deadline is not None and time.time() > deadline:
                break
    if not parts:
        return np.empty((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8), np.empty((0, len(HEADS)), np.int16)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _jobs(world_seed: int, n: int, chunk: int, labels: dict, kinds=miniworld.KINDS, scales=None, style_mode="half"):
    return [(world_seed, s, min(chunk, n - s), tuple(kinds), scales, style_mode, labels) for s in range(0, n, chunk)]


def _interleave(jobs_a: list, jobs_b: list) -> list:
    """Mix two job lists evenly, so a render cut short by the deadline keeps both streams."""
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
        "plain": _jobs(base + _STREAM_MAIN, n_plain, chunk, labels, style_mode="plain"),
        "birds": _jobs(base + _STREAM_BIRDS, n_birds, chunk, labels, kinds=("bird",), scales=SUBCLASS_SCALES, style_mode="plain"),
        "styled": _jobs(base + _STREAM_STYLED, n_styled, chunk, labels, style_mode="all"),
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


def _facing_invisible(y: np.ndarray, config: EvaluatorConfig) -> np.ndarray:
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
        visible = ~_facing_invisible(plain_y, net.config)
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
        visible = ~_facing_invisible(styled_y, net.config)
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


# --- training -----------------------------------------------------------------------------------


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
    progress: Callable | None = None,
    should_stop: Callable[[], bool] | None = None,
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
    config.json, accuracy.json, training_options.json.

    progress(step, total, **info) is called while rendering (phase="render") and training
    (step/total in seconds, with loss). should_stop() returning True ends training early;
    the model trained so far is still measured and written. Returns the accuracy dict.

    ignore_heads: heads that get no loss (their labels hidden), e.g. ("subclass",) for a backbone
    that knows the world but not the bird subclasses (bench/synthetic.py's classifier); their
    accuracy is still measured, and stays at chance.
    """
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
    train_jobs = _interleave(_jobs(base + _STREAM_MAIN, n_train - n_birds, chunk, labels),
                             _jobs(base + _STREAM_BIRDS, n_birds, chunk, labels, kinds=("bird",), scales=SUBCLASS_SCALES))
    render_total = n_eval_total + n_train
    all_x, all_y = render_set([job for jobs in sets_jobs.values() for job in jobs], progress=progress, total=render_total)
    eval_sets, start = {}, 0
    for name, jobs in sets_jobs.items():
        stop = start + sum(job[2] for job in jobs)
        eval_sets[name] = (all_x[start:stop], all_y[start:stop])
        start = stop
    train_x, train_y = render_set(train_jobs, deadline=t0 + render_fraction * seconds, progress=progress,
                                  total=render_total, done=start)
    if len(train_x) == 0:
        raise UserError(f"no training images were rendered within the time budget of {seconds} s; raise --seconds")
    # facing is invisible on mirror-symmetric kinds: no facing loss there
    train_y[_facing_invisible(train_y, config), HEADS.index("facing")] = -1
    for head in ignore_heads:
        train_y[:, HEADS.index(head)] = -1
    render_s = time.time() - t0
    render_rate = (len(train_x) + n_eval_total) / max(render_s, 1e-6)

    # 2. train
    use_cuda = dev.type == "cuda"
    if use_cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    autocast_dtype = torch.bfloat16 if precision == "bf16" else None
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
        if should_stop is not None and should_stop():
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
        with torch.autocast(dev.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
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
            if progress:
                progress(int(time.time() - train_start), max(1, int(deadline - train_start)), phase="train",
                         steps=step, loss=last_loss)
    if use_cuda:
        torch.cuda.synchronize()
    train_s = time.time() - train_start

    # 3. measure on fresh renderings, write
    accuracy = measure_accuracy(net, eval_sets, dev, autocast_dtype=autocast_dtype)
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
        "cpu_count": _workers(),
        "parameters": count_parameters(net),
        "command": " ".join(sys.argv),
        "world_seeds": {"train": base, "eval": EVAL_WORLD_SEED + 10 * seed},
    }
    (out_dir / OPTIONS_FILE).write_text(json.dumps(options, indent=2) + "\n")
    return accuracy
