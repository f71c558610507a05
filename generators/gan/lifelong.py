"""Lifelong few-shot GAN (LFS-GAN, docs/methods.md §2): a frozen base learns a sequence of domains.

A *task store* is a folder:

    store.json                          base reference: path, sha256 of generator.safetensors,
                                        its GANConfig and parameter count
    tasks/<name>/modulators.safetensors the task's LeFT factors (+ its truncation centre w_avg)
    tasks/<name>/task.json              configs (LeFTConfig, ModeSeekingConfig, TrainConfig,
                                        GANConfig), images used / rejected, storage (count and % of
                                        G), timings, losses
    work/<name>/checkpoint.*            an unfinished task (its modulators, its discriminator, both
                                        Adam states, RNG states); removed when the task is done

A task folder appears complete or not at all (written as a temporary folder, then renamed);
every JSON / tensor file is written to a temporary name and renamed. Learning a task never
writes the base or another task, so earlier tasks' samples stay bitwise identical (zero
forgetting by construction, tested).

Training a task (docs/methods.md §2.3, scaled to a CPU): the base G is frozen and gets LeFT
modulators (`generators.gan.left`, eqs. (1)-(5)); the discriminator is fine-tuned fully,
from the base folder's discriminator.safetensors when there is one, else from a fresh
initialisation. Non-saturating logistic loss, lazy R1 (γ = 10 every 16 D steps), Adam
lr 0.002 betas (0, 0.99) for both, batch 4 of the task images drawn with replacement,
per-layer noise random while training; the generator loss adds the cluster-wise
mode-seeking loss L_ms = λ / (S + ε) (`generators.gan.mode_seeking`). Every
`checkpoint_every` iterations the run is saved under work/<name>/ and `learn_task` with the
same arguments resumes it (bitwise the same result as an uninterrupted run on the CPU).

Seams: `progress(step, total, **info)` (about twice a second) and `should_stop()` (polled
every iteration; stops after writing a checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

from generators.config import SavedConfig
from generators.diffusion import resolve_device
from generators.errors import UserError
from generators.files import CHECKPOINT_FILE, atomic_save_tensors, atomic_write_json
from generators.gan.left import (
    LeFTConfig,
    attach_left,
    bake,
    count_left_parameters,
    left_parameters,
    left_state,
    load_left_state,
)
from generators.gan.mode_seeking import ModeSeekingConfig, assign_clusters, make_distance, mode_seeking_loss
from generators.gan.stylegan2 import (
    DISCRIMINATOR_FILE,
    GENERATOR_FILE,
    Discriminator,
    GANConfig,
    Generator,
    count_params,
    load_discriminator,
    load_generator,
    seeded_z,
    state_tensors,
)
from generators.optim_state import load_optimizer, optimizer_tensors

STORE_FORMAT = "studio-lifelong-gan"
STORE_VERSION = 1
STORE_FILE = "store.json"
TASKS_DIR = "tasks"
WORK_DIR = "work"
MODULATORS_FILE = "modulators.safetensors"
TASK_FILE = "task.json"
CHECKPOINT_JSON = "checkpoint.json"
DEFAULT_BASE = Path("assets/gan-mini")
W_AVG_KEY = "w_avg"
W_AVG_SEED = 7_000_001
MIN_TASK_IMAGES = 2
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
IGNORED_FILES = {"metadata.jsonl", "readme.md", ".ds_store", "thumbs.db", "style.toml"}
DEFAULT_ITERS = 400


@dataclass
class TrainConfig(SavedConfig):
    """Adversarial fine-tuning of one task (saved in task.json).

    iters: iterations (one D step + one G step each; the paper runs 3000 on a GPU, the CPU
    default is sized for about 5 minutes per task on the default gan-mini architecture).
    """

    iters: int = DEFAULT_ITERS
    batch: int = 4
    lr: float = 0.002
    d_lr: float = 0.002
    beta1: float = 0.0
    beta2: float = 0.99
    r1_gamma: float = 10.0
    r1_interval: int = 16
    checkpoint_every: int = 100
    seed: int = 0
    w_avg_samples: int = 4096

    def __post_init__(self):
        for name in ("iters", "batch", "r1_interval", "checkpoint_every", "w_avg_samples"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise UserError(f"{name} must be a positive integer, got {v!r}")
        if self.lr <= 0 or self.d_lr <= 0 or self.r1_gamma < 0:
            raise UserError("lr and d_lr must be positive and r1_gamma non-negative")


# --------------------------------------------------------------------------- small helpers


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_task_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise UserError(f"task name {name!r} must be 1-48 characters of lowercase letters, digits, '_' or '-', "
                        "starting with a letter or digit; choose another --task")
    return name


def synthesize(G: Generator, ws: torch.Tensor, noise_mode: str = "random", fused: bool = False):
    """G.synthesis(ws) that also returns every synthesis block's output features F^l (docs/methods.md §2.2).

    Mirrors `SynthesisNetwork.forward` step by step: (image, [F^1, ..., F^L]).
    """
    syn = G.synthesis
    if ws.ndim != 3 or ws.shape[1] != syn.num_ws:
        raise ValueError(f"ws must be [N, {syn.num_ws}, {syn.w_dim}], got {tuple(ws.shape)}")
    x = img = None
    feats = []
    w_idx = 0
    for block in syn.blocks:
        x, img = block(x, img, ws[:, w_idx:w_idx + block.num_conv + 1], noise_mode, fused)
        w_idx += block.num_conv
        feats.append(x)
    return img, feats


# --------------------------------------------------------------------------- base and images


def resolve_base(base=None) -> Path:
    """The base folder: `base`, else assets/gan-mini (cwd, then the repository); missing -> one-line error."""
    if base is not None:
        path = Path(base)
        shown = str(base)
    else:
        path = DEFAULT_BASE
        shown = str(DEFAULT_BASE)
        if not (path / GENERATOR_FILE).is_file():
            repo = Path(__file__).resolve().parents[2] / DEFAULT_BASE
            if (repo / GENERATOR_FILE).is_file():
                path = repo
    if not (path / GENERATOR_FILE).is_file():
        raise FileNotFoundError(f"no GAN base at {shown}; train one with `studio pretrain gan` or pass --base")
    return path


def load_base(base=None, device="cpu") -> tuple[Generator, Path]:
    path = resolve_base(base)
    G = load_generator(path, device=device)
    return G, path


def read_task_images(folder, resolution: int) -> tuple[torch.Tensor, list[dict], list[tuple[str, str]]]:
    """The usable images of a task folder as a float tensor [N, 3, R, R] in [-1, 1].

    Each file goes through `styles.folder.load_image` (validated, EXIF-transposed, RGB,
    centre-cropped to `resolution`); unreadable files, other file types, sub-folders and
    duplicates are rejected with a reason. Fewer than 2 usable images: UserError.
    Returns (images, [{"file", "sha256"}], [(file, reason)]).
    """
    import numpy as np

    from styles.folder import load_image

    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"task folder {folder} not found; pass a folder of images")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder; pass a folder of images")
    arrays, used, rejected, seen = [], [], [], {}
    for path in sorted(folder.iterdir()):
        if path.name.lower() in IGNORED_FILES or path.suffix.lower() == ".txt" or path.name.startswith("."):
            continue
        if path.is_dir():
            rejected.append((path.name, "a sub-folder (task folders are flat)"))
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            rejected.append((path.name, f"not an image file type ({', '.join(IMAGE_SUFFIXES)})"))
            continue
        try:
            image = load_image(path, resolution)
        except ValueError as err:
            rejected.append((path.name, str(err)))
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in seen:
            rejected.append((path.name, f"duplicate of {seen[digest]}"))
            continue
        seen[digest] = path.name
        arrays.append(np.asarray(image, dtype=np.uint8))
        used.append({"file": path.name, "sha256": digest})
    if len(arrays) < MIN_TASK_IMAGES:
        detail = ("; rejected: " + "; ".join(f"{f}: {r}" for f, r in rejected[:5])) if rejected else ""
        raise UserError(f"task folder {folder} has {len(arrays)} usable images, needs at least {MIN_TASK_IMAGES}"
                        f"{detail}")
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    return x.contiguous(), used, rejected


# --------------------------------------------------------------------------- the store


class TaskStore:
    """A task store folder (see the module docstring)."""

    def __init__(self, root):
        self.root = Path(root)

    @property
    def store_json(self) -> Path:
        return self.root / STORE_FILE

    def task_dir(self, name: str) -> Path:
        return self.root / TASKS_DIR / name

    def work_dir(self, name: str) -> Path:
        return self.root / WORK_DIR / name

    def exists(self) -> bool:
        return self.store_json.is_file()

    def info(self) -> dict:
        if not self.exists():
            raise FileNotFoundError(f"no task store at {self.root}; learn a task first with "
                                    f"`studio gan learn DIR --task NAME --store {self.root}`")
        try:
            data = json.loads(self.store_json.read_text())
        except json.JSONDecodeError as err:
            raise UserError(f"{self.store_json} is not valid JSON ({err})") from None
        if data.get("format") != STORE_FORMAT:
            raise UserError(f"{self.root} is not a lifelong GAN task store ({STORE_FILE} format "
                            f"{data.get('format')!r})")
        if data.get("version", 0) > STORE_VERSION:
            raise UserError(f"{self.store_json} has version {data['version']}; this code reads up to {STORE_VERSION}")
        return data

    def base_path(self, base=None) -> tuple[Path, str]:
        """The store's base (or `base`, which must be the same weights): (folder, sha256)."""
        data = self.info()
        ref = data["base"]
        path = Path(base) if base is not None else Path(ref["path"])
        gen = path / GENERATOR_FILE
        if not gen.is_file():
            if base is None:
                raise FileNotFoundError(f"the base of store {self.root} ({ref['path']}) is missing; "
                                        f"pass --base with its new location")
            raise FileNotFoundError(f"no GAN base at {base}; train one with `studio pretrain gan` or pass --base")
        sha = _sha256(gen)
        if sha != ref["sha256"]:
            raise UserError(f"store {self.root} was built on another base ({ref['path']}, sha256 "
                            f"{ref['sha256'][:12]}); pass --base with that base or use another --store")
        return path, sha

    def create_or_check(self, base_path: Path, G: Generator) -> str:
        """Write store.json on first use (base reference); otherwise check the base matches. Returns its sha256."""
        sha = _sha256(base_path / GENERATOR_FILE)
        if self.exists():
            ref = self.info()["base"]
            if ref["sha256"] != sha:
                raise UserError(f"store {self.root} was built on another base ({ref['path']}, sha256 "
                                f"{ref['sha256'][:12]}); pass --base with that base or use another --store")
            if str(base_path.resolve()) != ref["path"]:  # the same weights moved: remember where they are now
                data = self.info()
                data["base"]["path"] = str(base_path.resolve())
                atomic_write_json(self.store_json, data, sort_keys=True)
            return sha
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"{self.root} is not a folder; choose another --store")
        if self.root.exists() and any(p for p in self.root.iterdir() if p.name not in (TASKS_DIR, WORK_DIR)):
            raise FileExistsError(f"{self.root} exists and is not a task store; choose another --store")
        self.root.mkdir(parents=True, exist_ok=True)
        data = {"format": STORE_FORMAT, "version": STORE_VERSION, "created_at": _now(),
                "base": {"path": str(base_path.resolve()), "sha256": sha, "config": G.config.to_dict(),
                         "g_params": count_params(G)}}
        atomic_write_json(self.store_json, data, sort_keys=True)
        return sha

    def task_names(self) -> list[str]:
        tasks = self.root / TASKS_DIR
        if not tasks.is_dir():
            return []
        metas = []
        for d in tasks.iterdir():
            if d.is_dir() and not d.name.startswith(".") and (d / TASK_FILE).is_file():
                try:
                    metas.append((json.loads((d / TASK_FILE).read_text()).get("index", 0), d.name))
                except json.JSONDecodeError:
                    continue
        return [n for _, n in sorted(metas)]

    def task_meta(self, name: str) -> dict:
        path = self.task_dir(name) / TASK_FILE
        if not path.is_file():
            known = self.task_names()
            hint = f"; tasks: {', '.join(known)}" if known else "; the store has no tasks yet"
            raise FileNotFoundError(f"no task {name!r} in store {self.root}{hint}")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise UserError(f"{path} is not valid JSON ({err})") from None


# --------------------------------------------------------------------------- the adaptation loop


class Adapter:
    """One few-shot adaptation run: D and the given G parameters, trained on `reals`.

    Used for LeFT tasks (params = the LeFT factors) and, by the benchmark, for full
    fine-tuning (params = all of G). `step()` runs one iteration: a D step on a batch of
    reals and one G batch, lazy R1, then a G step through the updated D with the
    mode-seeking loss added (docs/methods.md §2.2).
    """

    def __init__(self, G: Generator, D: Discriminator, params: list, reals: torch.Tensor, train: TrainConfig,
                 ms: ModeSeekingConfig, distance=None, device="cpu"):
        self.G, self.D, self.params = G, D, list(params)
        self.train, self.ms, self.distance = train, ms, distance
        self.device = torch.device(device)
        self.reals = reals.to(self.device)
        if ms.enabled and distance is None:
            raise ValueError("mode seeking needs an assignment distance")
        c = train.r1_interval / (train.r1_interval + 1)
        self.opt_G = torch.optim.Adam(self.params, lr=train.lr, betas=(train.beta1, train.beta2), eps=1e-8)
        self.opt_D = torch.optim.Adam(D.parameters(), lr=train.d_lr * c, betas=(train.beta1, train.beta2 ** c),
                                      eps=1e-8)
        self.gen = torch.Generator().manual_seed(int(train.seed))
        self.step_count = 0
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.history: list[dict] = []

    def _z(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.G.z_dim, generator=self.gen).to(self.device)

    def _add(self, key, value):
        self.sums[key] = self.sums.get(key, 0.0) + float(value)
        self.counts[key] = self.counts.get(key, 0) + 1

    def averages(self, reset: bool = False) -> dict:
        out = {k: self.sums[k] / self.counts[k] for k in self.sums if self.counts[k]}
        if reset:
            self.sums, self.counts = {}, {}
        return out

    def step(self) -> dict:
        G, D, train, ms = self.G, self.D, self.train, self.ms
        idx = torch.randint(self.reals.shape[0], (train.batch,), generator=self.gen).to(self.device)
        real = self.reals[idx]
        z = self._z(train.batch)
        ws = G.mapping(z)
        fake, feats = synthesize(G, ws, noise_mode="random")

        # ---- D: logistic loss on the detached batch, lazy R1 on reals (fp32)
        D.requires_grad_(True)
        loss_D = F.softplus(D(fake.detach())).mean() + F.softplus(-D(real)).mean()
        self.opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        self.opt_D.step()
        self.step_count += 1
        info = {"loss_D": float(loss_D.detach())}
        if train.r1_gamma > 0 and self.step_count % train.r1_interval == 0:
            real_r1 = real.detach().requires_grad_(True)
            logits = D(real_r1)
            (grad,) = torch.autograd.grad(logits.sum(), real_r1, create_graph=True)
            penalty = grad.square().sum(dim=(1, 2, 3)).mean()
            self.opt_D.zero_grad(set_to_none=True)
            (penalty * (train.r1_gamma / 2 * train.r1_interval) + logits.mean() * 0).backward()
            self.opt_D.step()
            info["r1"] = float(penalty.detach())

        # ---- G: non-saturating loss through the updated D, + cluster-wise mode seeking
        D.requires_grad_(False)
        loss_G = F.softplus(-D(fake)).mean()
        total = loss_G
        info["loss_G"] = float(loss_G.detach())
        if ms.enabled and ms.weight > 0:
            if ms.batch:
                z_ms = self._z(ms.batch)
                ws_ms = G.mapping(z_ms)
                img_ms, feats_ms = synthesize(G, ws_ms, noise_mode="const")
            else:
                z_ms, ws_ms, img_ms, feats_ms = z, ws, fake, feats
            assignment = assign_clusters(self.distance(img_ms.detach()))
            loss_ms, ms_info = mode_seeking_loss(z_ms, ws_ms[:, 0], feats_ms, img_ms, assignment, ms.weight, ms.eps)
            info["ms_pairs"] = ms_info["pairs"]
            if loss_ms is not None:
                total = total + loss_ms
                info["loss_ms"] = float(loss_ms.detach())
        self.opt_G.zero_grad(set_to_none=True)
        total.backward()
        self.opt_G.step()
        D.requires_grad_(True)
        for k, v in info.items():
            self._add(k, v)
        bad = [k for k in ("loss_G", "loss_D") if not math.isfinite(info[k])]
        if bad:
            raise FloatingPointError(f"training diverged at iteration {self.step_count}: {bad} not finite")
        return info

    # ---- checkpoint state (generic over the trained parameter list)
    def state_tensors(self) -> dict[str, torch.Tensor]:
        t = {f"P.{i}": p.detach().to("cpu").contiguous() for i, p in enumerate(self.params)}
        t.update(state_tensors(self.D, "D."))
        t.update(optimizer_tensors(self.opt_G, self.params, "optG."))
        t.update(optimizer_tensors(self.opt_D, list(self.D.parameters()), "optD."))
        t["rng.gen"] = self.gen.get_state()
        t["rng.cpu"] = torch.get_rng_state()
        if self.device.type == "cuda":
            t["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        return t

    def load_state_tensors(self, t: dict[str, torch.Tensor], step: int) -> None:
        with torch.no_grad():
            for i, p in enumerate(self.params):
                src = t[f"P.{i}"]
                if tuple(src.shape) != tuple(p.shape):
                    raise UserError(f"checkpoint parameter {i} has shape {tuple(src.shape)}, expected {tuple(p.shape)}")
                p.copy_(src.to(p.device, p.dtype))
        self.D.load_state_dict({k[2:]: v for k, v in t.items() if k.startswith("D.")})
        load_optimizer(self.opt_G, self.params, t, "optG.", self.device)
        load_optimizer(self.opt_D, list(self.D.parameters()), t, "optD.", self.device)
        self.gen.set_state(t["rng.gen"])
        torch.set_rng_state(t["rng.cpu"])
        if self.device.type == "cuda" and "rng.cuda" in t:
            torch.cuda.set_rng_state(t["rng.cuda"], self.device)
        self.step_count = int(step)


@torch.no_grad()
def mapping_w_avg(G: Generator, n: int = 4096, seed: int = W_AVG_SEED) -> torch.Tensor:
    """The (modulated) mapping network's mean w over `n` seeded latents: a task's truncation centre."""
    dev = next(G.parameters()).device
    outs = [G.mapping(seeded_z(n, G.z_dim, seed, dev)[i:i + 1024])[:, 0] for i in range(0, n, 1024)]
    return torch.cat(outs).mean(0).cpu()


def _discriminator_for(base_path: Path, cfg: GANConfig, seed: int, device) -> tuple[Discriminator, str]:
    if (base_path / DISCRIMINATOR_FILE).is_file():
        D = load_discriminator(base_path, device=device)
        return D.train().requires_grad_(True), "fine-tuned from the base discriminator"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) + 17)
        D = Discriminator(cfg)
    return D.to(device).train(), "initialised fresh (the base folder has no discriminator.safetensors)"


def _load_evaluator_for(ms: ModeSeekingConfig, evaluator, device):
    if not ms.enabled or ms.distance != "perceptual" or evaluator is not None:
        return evaluator
    from generators.evaluators import load_evaluator

    return load_evaluator(device=str(device))


def _resume_key(left: LeFTConfig, ms: ModeSeekingConfig, train: TrainConfig, images: list[dict], base_sha: str):
    t = train.to_dict()
    t.pop("iters")
    t.pop("checkpoint_every")
    return {"left": left.to_dict(), "mode_seeking": ms.to_dict(), "train": t,
            "images": [im["sha256"] for im in images], "base_sha256": base_sha}


def learn_task(store, name: str, images_dir, base=None, left: LeFTConfig | None = None,
               train: TrainConfig | None = None, mode_seeking: ModeSeekingConfig | None = None,
               device="cpu", progress=None, should_stop=None, evaluator=None, preview=None) -> dict:
    """Learn task `name` from the images in `images_dir` into `store`; returns its task.json (or, when
    stopped early, {"stopped": True, "step": ..., "iters": ..., "work": ...}).

    base: the base folder (default: the store's base, else assets/gan-mini). A store is bound
    to one base (sha256 of generator.safetensors). An unfinished run of the same task in
    work/<name>/ is resumed; it must have the same images and options (only iters may change).
    Nothing is written to the store before the images and base are validated.
    preview(step, G=...) is called after every iteration with the generator being trained.
    """
    t_start = time.monotonic()
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
    base_sha = st.create_or_check(base_path, G)
    g_params = count_params(G)

    rng_devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):  # the caller's RNG state is left alone
        torch.manual_seed(train.seed)
        G.train().requires_grad_(False)
        attach_left(G, left, seed=train.seed)
        params = left_parameters(G)
        D, d_origin = _discriminator_for(base_path, G.config, train.seed, dev)
        distance = make_distance(ms.distance, reals.to(dev), evaluator) if ms.enabled else None
        adapter = Adapter(G, D, params, reals, train, ms, distance, dev)

        work = st.work_dir(name)
        key = _resume_key(left, ms, train, used, base_sha)
        ckpt_json, ckpt_t = work / CHECKPOINT_JSON, work / CHECKPOINT_FILE
        prev_train_s, runs = 0.0, 1
        if ckpt_json.is_file() and ckpt_t.is_file():
            from safetensors.torch import load_file

            saved = json.loads(ckpt_json.read_text())
            if saved.get("resume_key") != key:
                raise UserError(f"{work} holds an unfinished run of task {name!r} with other images or options; "
                                f"rerun with the same ones to resume, or delete {work} to start over")
            adapter.load_state_tensors(load_file(str(ckpt_t), device="cpu"), saved["step"])
            adapter.history = saved.get("history", [])
            prev_train_s, runs = float(saved.get("train_seconds", 0.0)), int(saved.get("runs", 1)) + 1

        def save_checkpoint(train_s):
            work.mkdir(parents=True, exist_ok=True)
            atomic_save_tensors(adapter.state_tensors(), ckpt_t, {"format": STORE_FORMAT, "step": str(adapter.step_count)})
            atomic_write_json(ckpt_json, {"format": STORE_FORMAT, "task": name, "step": adapter.step_count, "iters": train.iters,
                                          "resume_key": key, "history": adapter.history, "train_seconds": round(train_s, 3),
                                          "runs": runs, "saved_at": _now()}, sort_keys=True)

        setup_s = time.monotonic() - t_start
        t_loop = time.monotonic()
        start_step = adapter.step_count
        last_report = 0.0
        log_every = max(1, min(25, train.iters // 20 or 1))
        stopped = False
        while adapter.step_count < train.iters:
            if should_stop is not None and should_stop():
                stopped = True
                break
            info = adapter.step()
            s = adapter.step_count
            if s % log_every == 0 or s == train.iters:
                avg = adapter.averages(reset=True)
                adapter.history.append({"step": s, **{k: round(v, 5) for k, v in avg.items()}})
            now = time.monotonic()
            if progress is not None and (now - last_report >= 0.5 or s == train.iters):
                last_report = now
                progress(s, train.iters, loss_G=info["loss_G"], loss_D=info["loss_D"],
                         **({"loss_ms": info["loss_ms"]} if "loss_ms" in info else {}))
            if preview is not None:
                preview(s, G=adapter.G)
            if s % train.checkpoint_every == 0 and s < train.iters:
                save_checkpoint(prev_train_s + now - t_loop)
        train_s = time.monotonic() - t_loop
        if stopped:
            save_checkpoint(prev_train_s + train_s)
            return {"stopped": True, "step": adapter.step_count, "iters": train.iters, "work": str(work)}

        # ---- the finished task: modulators + w_avg, task.json, written as one folder
        G.eval()
        w_avg = mapping_w_avg(G, train.w_avg_samples)
        tensors = left_state(G)
        tensors[W_AVG_KEY] = w_avg.contiguous()
        n_stored = count_left_parameters(G) + w_avg.numel()
        iters_run = adapter.step_count - start_step
        meta = {
            "format": STORE_FORMAT, "version": STORE_VERSION, "name": name,
            "index": len(st.task_names()) + 1, "created_at": _now(),
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
            "losses": adapter.history[-1] if adapter.history else {},
            "loss_history": adapter.history,
        }
        tasks_root = st.root / TASKS_DIR
        tasks_root.mkdir(parents=True, exist_ok=True)
        tmp = tasks_root / f".{name}.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        atomic_save_tensors(tensors, tmp / MODULATORS_FILE, {"format": STORE_FORMAT, "task": name})
        meta["timings"]["wall_s"] = round(time.monotonic() - t_start, 3)
        atomic_write_json(tmp / TASK_FILE, meta, sort_keys=True)
        os.rename(tmp, st.task_dir(name))
        if work.exists():
            shutil.rmtree(work)
            if not any((st.root / WORK_DIR).iterdir()):
                (st.root / WORK_DIR).rmdir()
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


@torch.no_grad()
def generate(G: Generator, n: int, seed: int, truncation_psi: float = 1.0, batch: int = 64) -> torch.Tensor:
    """n images [n, 3, R, R] in [-1, 1] from seeded latents (constant noise): the same seed, the same images."""
    if n < 1:
        raise UserError(f"the number of samples must be at least 1, got {n}")
    dev = next(G.parameters()).device
    z = seeded_z(n, G.z_dim, seed, dev)
    G.eval()
    out = [G(z[i:i + batch], truncation_psi=truncation_psi, noise_mode="const").cpu() for i in range(0, n, batch)]
    return torch.cat(out)


def sample_task(store, name: str, n: int, seed: int = 0, truncation_psi: float = 1.0, base=None, device="cpu",
                batch: int = 64) -> torch.Tensor:
    """n samples of task `name` (baked generator, constant noise, latents from `seed`)."""
    G, _ = load_task_generator(store, name, base=base, device=device)
    return generate(G, n, seed, truncation_psi, batch)


def list_tasks(store) -> list[dict]:
    """One summary per task, in learning order."""
    st = TaskStore(store)
    st.info()
    out = []
    for name in st.task_names():
        m = st.task_meta(name)
        out.append({
            "name": name, "index": m.get("index"), "created_at": m.get("created_at"),
            "images": len(m.get("images", [])), "iters": m["config"]["train"]["iters"],
            "rank": m["config"]["left"]["rank"], "mode_seeking": m["config"]["mode_seeking"]["enabled"],
            "storage_params": m["storage"]["params"], "storage_percent_of_G": m["storage"]["percent_of_G"],
            "train_s": m["timings"]["train_s"], "losses": m.get("losses", {}),
        })
    return out


def unfinished_tasks(store) -> list[dict]:
    """Runs under work/ that were stopped or killed: [{"name", "step", "iters"}]."""
    work = Path(store) / WORK_DIR
    out = []
    if work.is_dir():
        for d in sorted(work.iterdir()):
            j = d / CHECKPOINT_JSON
            if j.is_file():
                try:
                    data = json.loads(j.read_text())
                except json.JSONDecodeError:
                    continue
                out.append({"name": d.name, "step": data.get("step"), "iters": data.get("iters")})
    return out
