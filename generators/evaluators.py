"""The evaluators: small classifiers trained on mini-world renderings; the network and its inference API.

They are the project's offline stand-in for CLIP / Inception: one multi-head CNN
(:class:`EvaluatorNet`, ~1.6 M parameters, 64x64 RGB input) reads an image and predicts
every mini-world attribute plus the reference style it is drawn in. Besides per-head
predictions it gives penultimate features (for a mini FID, :func:`mini_fid`: FID's Fréchet
distance on these features instead of Inception's, docs/methods.md §2.3) and an LPIPS-like
:meth:`Evaluator.perceptual_distance` (LPIPS without its learnt channel weights).

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

Here: the network (:class:`EvaluatorConfig`, :class:`EvaluatorNet`), the trained evaluator
(:class:`Evaluator`, :func:`load_evaluator`, :func:`save_evaluator`) and the distances.
Rendering the labelled sets and measuring accuracy: generators/evaluator_sets.py; training
(``studio pretrain evaluators``): generators/evaluator_training.py.

Weights are read with safetensors only; nothing here unpickles files.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from generators import miniworld
from generators.config import SavedConfig
from generators.diffusion import resolve_device

IMAGE_SIZE = 64
DEFAULT_FOLDER = Path(__file__).resolve().parents[1] / "assets" / "evaluators"
WEIGHTS_FILE = "evaluator.safetensors"
CONFIG_FILE = "config.json"
HEADS = ("kind", "subclass", "color", "background", "position", "scale", "tilt", "facing", "style")


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

