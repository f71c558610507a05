"""bench/synthetic.py's protocols: the real data, and the classifiers that measure what synthetic images add.

Data: plain medium/large mini-world birds of the chosen subclasses, rendered per stream (train
shots, held-out validation, test; :func:`render_real`), written as class folders for the fit and
read back from an export; :func:`class_fidelity` is the share of images the committed subclass
evaluator assigns to the class asked for; :func:`context_diversity` measures how varied the
backgrounds and poses the committed evaluator reads in a set are, at the real shots' size.

Classifiers (docs/methods.md §3.4), each trained on real shots repeated to 1:1 with synthetic
images in every batch, loss λ·CE_real + (1−λ)·CE_syn, the checkpoint chosen on held-out real
images (:func:`select`, :func:`classify`):

* probe (:func:`train_probe`): a linear classifier on frozen features of a backbone trained
  without subclass labels (:func:`ensure_backbone`, assets/probe-backbone);
* finetune (:func:`train_finetune`): that backbone fine-tuned end to end with a new head
  (BOB's downstream protocol);
* scratch (:func:`train_classifier`): a small EvaluatorNet from scratch.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from generators import miniworld
from generators.evaluators import EvaluatorConfig, EvaluatorNet
from generators.files import sha256_file

TRAIN_STREAM, VAL_STREAM, TEST_STREAM = 71, 72, 73


# --- data -----------------------------------------------------------------------------------


def render_real(classes: list[str], n: int, stream: int, seed: int, size: int = 64):
    """n plain medium/large birds per class, random background and pose: (uint8 N×H×W×3, labels)."""
    images, labels = [], []
    for label, c in enumerate(classes):
        for i in range(n):
            rng = np.random.default_rng([stream, seed, label, i])
            attrs = miniworld.sample_attributes(rng, kinds=("bird",), subclasses=(c,), scales=("medium", "large"))
            images.append(np.asarray(miniworld.render(attrs, size, seed=int(rng.integers(2**31))), dtype=np.uint8))
            labels.append(label)
    return np.stack(images), np.asarray(labels)


def write_class_folders(root: Path, classes: list[str], images: np.ndarray, labels: np.ndarray) -> Path:
    for label, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i, im in enumerate(images[labels == label]):
            Image.fromarray(im).save(root / c / f"{i:03d}.png")
    return root


def read_export(out: Path, classes: list[str], size: int = 64):
    rows = [json.loads(line) for line in (out / "train" / "metadata.jsonl").read_text().splitlines()]
    images, labels = [], []
    for r in rows:
        with Image.open(out / "train" / r["file_name"]) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BICUBIC)
            images.append(np.asarray(im, dtype=np.uint8))
        labels.append(classes.index(r["class_name"]))
    return np.stack(images), np.asarray(labels)


def class_fidelity(evaluator, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> float:
    """Fraction of synthetic images the committed subclass evaluator assigns to the class asked for
    (argmax over the benchmark's classes): does the class word or token in the prompt draw that class?"""
    names = evaluator.labels["subclass"]
    logits = evaluator.logits(to_tensor(images, "cpu"))["subclass"][:, [names.index(c) for c in classes]]
    return float((logits.argmax(-1).numpy() == labels).mean())


def read_class_folders(root: Path, classes: list[str], size: int = 64):
    """The real shots as :func:`write_class_folders` wrote them: (uint8 N×H×W×3, labels)."""
    images, labels = [], []
    for label, c in enumerate(classes):
        for f in sorted((root / c).glob("*.png")):
            with Image.open(f) as im:
                images.append(np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.uint8))
            labels.append(label)
    return np.stack(images), np.asarray(labels)


CONTEXT_HEADS = ("background", "facing", "position", "scale")


@torch.no_grad()
def read_contexts(evaluator, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """The committed evaluator's reading of each image's context: N × 4 label indices, in the order
    of CONTEXT_HEADS (background, then the pose: facing, position, scale)."""
    rows = []
    for i in range(0, len(images), batch):
        logits = evaluator.logits(to_tensor(images[i:i + batch], "cpu"))
        rows.append(np.stack([logits[h].argmax(-1).numpy() for h in CONTEXT_HEADS], axis=1))
    return np.concatenate(rows)


def entropy_bits(rows: np.ndarray) -> float:
    """Shannon entropy in bits of the empirical distribution of the rows (each row one outcome)."""
    _, counts = np.unique(rows, axis=0, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def context_diversity(contexts: np.ndarray, labels: np.ndarray, k: int, draws: int = 20, seed: int = 0) -> dict:
    """How varied the backgrounds and poses of a set are, at the real shots' size, so that an export
    of 20 images a class and 5 real shots a class are compared on equal counts (entropy grows with
    the sample). Each draw takes k images per class at random (all of a class's images where it has
    k or fewer) and measures, over the pooled draw, the entropy in bits of the background read back
    (at most log2 8 = 3) and of the pose (facing, position and scale jointly, at most log2 54); each
    is the mean over the draws. BOB draws its contexts from the bank of every class's real shots, so its exports
    should reach the real shots' figures; an export without context shows what the base defaults to."""
    rng = np.random.default_rng(seed)
    background, pose = [], []
    classes = np.unique(labels)
    for _ in range(draws if any((labels == c).sum() > k for c in classes) else 1):
        picked = []
        for c in classes:
            idx = np.flatnonzero(labels == c)
            picked.append(rng.choice(idx, size=k, replace=False) if len(idx) > k else idx)
        background.append(entropy_bits(contexts[np.concatenate(picked), :1]))
        pose.append(entropy_bits(contexts[np.concatenate(picked), 1:]))
    return {"k": k, "background_bits": float(np.mean(background)), "pose_bits": float(np.mean(pose))}


# --- the classifier --------------------------------------------------------------------------


def to_tensor(images: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and ±4 px shift (reflect padding)."""
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(3), x)
    pad = 4
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
    return xp[:, :, dy:dy + x.shape[2], dx:dx + x.shape[3]]


@torch.no_grad()
def accuracy(net, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> float:
    net.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += (net(x[i:i + batch])["subclass"].argmax(-1) == y[i:i + batch]).sum().item()
    net.train()
    return correct / max(1, len(x))


def train_mixed(net, opt, real, synth, val, test, lam: float, steps: int, args, seed: int, device) -> dict:
    """The shared loop: real shots (and synthetic images, mixed lam : 1 - lam per step, 1:1 in count),
    augmented, every param group's lr cosine from its "base" to 0; returns val/test accuracy of the
    best-on-validation checkpoint (evaluated every --eval-every steps)."""
    gen = torch.Generator("cpu").manual_seed(seed)
    xr, yr = to_tensor(real[0], device), torch.as_tensor(real[1], device=device)
    xs = ys = None
    if synth is not None:
        xs, ys = to_tensor(synth[0], device), torch.as_tensor(synth[1], device=device)
    xv, yv = to_tensor(val[0], device), torch.as_tensor(val[1], device=device)
    xt, yt = to_tensor(test[0], device), torch.as_tensor(test[1], device=device)
    b, best = args.clf_batch, {"val": -1.0, "test": 0.0, "step": 0}
    net.train()
    for step in range(1, steps + 1):
        for group in opt.param_groups:
            group["lr"] = group["base"] * 0.5 * (1 + math.cos(math.pi * step / steps))
        ir = torch.randint(len(xr), (b,), generator=gen).to(device)  # real shots repeated to 1:1 with synthetic
        loss = F.cross_entropy(net(augment(xr[ir], gen))["subclass"], yr[ir])
        if xs is not None:
            is_ = torch.randint(len(xs), (b,), generator=gen).to(device)
            loss = lam * loss + (1 - lam) * F.cross_entropy(net(augment(xs[is_], gen))["subclass"], ys[is_])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % args.eval_every == 0 or step == steps:
            v = accuracy(net, xv, yv)
            if v > best["val"]:
                best = {"val": v, "test": accuracy(net, xt, yt), "step": step}
    best["lambda"] = lam
    return best


def train_classifier(classes, real, synth, val, test, lam: float, args, seed: int, device) -> dict:
    """A classifier from scratch on real (+ synthetic) images (train_mixed)."""
    torch.manual_seed(seed)
    cfg = EvaluatorConfig(labels={"subclass": list(classes)}, widths=tuple(args.widths), spatial_channels=16, feature_dim=128)
    net = EvaluatorNet(cfg).to(device)
    opt = torch.optim.AdamW([{"params": net.parameters(), "lr": args.clf_lr, "base": args.clf_lr}], weight_decay=5e-4)
    return train_mixed(net, opt, real, synth, val, test, lam, args.clf_steps, args, seed, device)


# --- the probe: a linear classifier on a frozen backbone that never saw a subclass label --------


def ensure_backbone(folder: Path, seconds: float, device) -> Path:
    """The backbone: an evaluator network trained on the mini world's kind, colour, background,
    position, scale, facing, tilt and style labels, never on subclasses (their labels hidden):
    our stand-in for an ImageNet- or CLIP-pretrained backbone, which knows birds but not species.
    Trained once (CPU: about `seconds`) and reused from `folder`."""
    from generators.evaluator_training import train_evaluators

    if not (folder / "evaluator.safetensors").is_file():
        print(f"training the backbone into {folder} ({seconds:.0f} s; subclass labels hidden)", flush=True)
        config = EvaluatorConfig(labels=EvaluatorConfig.default().labels, widths=(16, 32, 64, 96, 128),
                                 facing_invisible_kinds=EvaluatorConfig.default().facing_invisible_kinds)
        train_evaluators(folder, seconds, device=str(device), n_train=40_000, batch_size=64, config=config,
                         ignore_heads=("subclass",), n_eval=500, n_eval_birds=300, n_eval_styled=300)
    return folder


def backbone_sha256(folder: Path) -> str | None:
    """What identifies the probe's backbone in a report (not its path: copies are the same backbone)."""
    weights = folder / "evaluator.safetensors"
    return sha256_file(weights) if weights.is_file() else None


@torch.no_grad()
def backbone_features(net, images: np.ndarray, device, flip: bool = False, batch: int = 256) -> torch.Tensor:
    """Frozen features: the last three stages max-pooled (is a crest or a stripe anywhere?), the
    last one also average-pooled, and the network's own feature layer. Max pooling lifts the
    real-only probe from 0.23 to 0.39 at 50 shots per class over average pooling alone (two seeds)."""
    out = []
    for i in range(0, len(images), batch):
        x = to_tensor(images[i:i + batch], device)
        if flip:
            x = x.flip(3)
        stages = net.stage_outputs(x)
        parts = [s.amax((2, 3)) for s in stages[-3:]] + [stages[-1].mean((2, 3)), net._features_from(stages[-1])]
        out.append(torch.cat(parts, 1).cpu())
    return torch.cat(out)


class FeatureSet:
    """Features of a set of images (and of their mirror images, the probe's augmentation)."""

    def __init__(self, net, data, device, augment: bool):
        self.labels = torch.as_tensor(data[1])
        self.views = [backbone_features(net, data[0], device)]
        if augment:
            self.views.append(backbone_features(net, data[0], device, flip=True))
        self.stacked = torch.stack(self.views)  # views × images × features, stacked once

    def batch(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        view = torch.randint(len(self.views), (len(idx),), generator=gen)
        return self.stacked[view, idx]


def train_probe(real: FeatureSet, synth: FeatureSet | None, val: FeatureSet, test: FeatureSet, n_classes: int,
                lam: float, args, seed: int) -> dict:
    """A linear classifier on frozen features, the same mixing as train_classifier: real rows
    repeated to 1:1 with synthetic, λ·CE_real + (1−λ)·CE_syn; the best-on-validation step."""
    torch.manual_seed(seed)
    gen = torch.Generator("cpu").manual_seed(seed)
    mean, std = real.views[0].mean(0), real.views[0].std(0) + 1e-4  # standardised on the real shots
    head = torch.nn.Linear(mean.numel(), n_classes)
    opt = torch.optim.AdamW(head.parameters(), lr=args.probe_lr, weight_decay=1e-2)
    b, best = args.clf_batch, {"val": -1.0, "test": 0.0, "step": 0}

    def acc(fs: FeatureSet) -> float:
        with torch.no_grad():
            return float((head((fs.views[0] - mean) / std).argmax(-1) == fs.labels).float().mean())

    for step in range(1, args.probe_steps + 1):
        for group in opt.param_groups:
            group["lr"] = args.probe_lr * 0.5 * (1 + math.cos(math.pi * step / args.probe_steps))
        ir = torch.randint(len(real.labels), (b,), generator=gen)
        loss = F.cross_entropy(head((real.batch(ir, gen) - mean) / std), real.labels[ir])
        if synth is not None:
            is_ = torch.randint(len(synth.labels), (b,), generator=gen)
            loss = lam * loss + (1 - lam) * F.cross_entropy(head((synth.batch(is_, gen) - mean) / std), synth.labels[is_])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % args.probe_eval_every == 0 or step == args.probe_steps:
            v = acc(val)
            if v > best["val"]:
                best = {"val": v, "test": acc(test), "step": step}
    best["lambda"] = lam
    return best


# --- fine-tuning: the pretrained backbone and a new linear head, trained end to end -------------


class FineTuned(torch.nn.Module):
    """The probe's backbone (a copy, trained on) reading the same pooled features as the probe,
    standardised on the real shots, into a new linear head. BatchNorm keeps the backbone's running
    statistics (a few shots per class are too few to re-estimate them)."""

    def __init__(self, backbone, n_classes: int, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.backbone = copy.deepcopy(backbone)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.head = torch.nn.Linear(mean.numel(), n_classes)

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # frozen BatchNorm statistics; the weights still train
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        stages = self.backbone.stage_outputs(x)
        parts = [s.amax((2, 3)) for s in stages[-3:]] + [stages[-1].mean((2, 3)), self.backbone._features_from(stages[-1])]
        return {"subclass": self.head((torch.cat(parts, 1) - self.mean) / self.std)}


def train_finetune(classes, real, synth, val, test, lam: float, args, seed: int, device, backbone, real_feats) -> dict:
    """BOB's downstream protocol on our stand-in: the pretrained backbone fine-tuned with a new head
    (backbone lr --ft-lr, head lr --probe-lr, cosine), the same real:synthetic mixing and
    best-on-validation selection as train_classifier; images augmented (flip, ±4 px shift)."""
    torch.manual_seed(seed)
    mean, std = real_feats.views[0].mean(0), real_feats.views[0].std(0) + 1e-4
    net = FineTuned(backbone, len(classes), mean, std).to(device)
    opt = torch.optim.AdamW([{"params": net.backbone.parameters(), "lr": args.ft_lr, "base": args.ft_lr},
                             {"params": net.head.parameters(), "lr": args.probe_lr, "base": args.probe_lr}], weight_decay=1e-2)
    return train_mixed(net, opt, real, synth, val, test, lam, args.ft_steps, args, seed, device)


def select(runs: list[dict]) -> dict:
    """Model selection on held-out real images: the best validation accuracy (ties: the earlier λ)."""
    return max(runs, key=lambda r: r["val"])



def classify(args, classes, real, synth, val, test, seed, device, backbone, test_feats, synth_feats=None) -> dict:
    """The selected (best-on-validation over λ) classifier for real shots (+ one synthetic set)."""
    lambdas = [1.0] if synth is None else args.lambdas
    if args.classifier == "probe":
        feats = {"real": FeatureSet(backbone, real, device, True), "val": FeatureSet(backbone, val, device, False)}
        if synth is not None and synth_feats is None:
            synth_feats = FeatureSet(backbone, synth, device, True)
        runs = [train_probe(feats["real"], synth_feats, feats["val"], test_feats, len(classes), lam, args, seed) for lam in lambdas]
    elif args.classifier == "finetune":
        real_feats = FeatureSet(backbone, real, device, False)
        runs = [train_finetune(classes, real, synth, val, test, lam, args, seed, device, backbone, real_feats) for lam in lambdas]
    else:
        runs = [train_classifier(classes, real, synth, val, test, lam, args, seed, device) for lam in lambdas]
    return select(runs)
