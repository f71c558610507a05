"""Training one lifelong-GAN task (LFS-GAN, docs/methods.md §2.3, scaled to a CPU): `TaskTrainer`.

The base G is frozen and carries LeFT modulators (`generators.gan.left`, eqs. (1)-(5)); the
trainer updates the parameters it is given (the LeFT factors; the benchmark's full fine-tuning
gives it all of G) and fine-tunes the whole discriminator (`task_discriminator`: the base's,
else a fresh one). One iteration: non-saturating logistic loss for D on a batch of task images
drawn with replacement and one G batch (per-layer noise random), lazy R1 (γ = 10 every 16 D
steps), then the G step through the updated D plus the cluster-wise mode-seeking loss
L_ms = λ / (S + ε) (`generators.gan.mode_seeking`, docs/methods.md §2.2). Adam lr 0.002,
betas (0, 0.99) for both. All training randomness after the initialisation comes from the
trainer's own generator and the global RNG, both saved in its checkpoint state, so a resumed
task equals an uninterrupted one bitwise on the CPU. `mapping_w_avg` is a finished task's
truncation centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from generators.config import SavedConfig
from generators.errors import UserError
from generators.gan.folder import DISCRIMINATOR_FILE, load_discriminator, state_tensors
from generators.gan.mode_seeking import ModeSeekingConfig, assign_clusters, mode_seeking_loss
from generators.gan.sampling import seeded_z
from generators.gan.stylegan2 import Discriminator, GANConfig, Generator
from generators.optim_state import load_optimizer, optimizer_tensors

DEFAULT_ITERS = 400
W_AVG_SEED = 7_000_001


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


class TaskTrainer:
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
        fake, feats = G.synthesis(ws, noise_mode="random", return_features=True)

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
                img_ms, feats_ms = G.synthesis(ws_ms, noise_mode="const", return_features=True)
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


def task_discriminator(base_path: Path, cfg: GANConfig, seed: int, device) -> tuple[Discriminator, str]:
    """The discriminator a task fine-tunes (the base folder's, else a fresh one from `seed`) and where it came from."""
    if (base_path / DISCRIMINATOR_FILE).is_file():
        D = load_discriminator(base_path, device=device)
        return D.train().requires_grad_(True), "fine-tuned from the base discriminator"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) + 17)
        D = Discriminator(cfg)
    return D.to(device).train(), "initialised fresh (the base folder has no discriminator.safetensors)"
