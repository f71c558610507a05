"""A gan-mini folder on disk: config.json and the generator / discriminator weights (safetensors).

    folder/config.json                 {"format": "studio-gan-mini", "format_version": 1, "config": GANConfig}
    folder/generator.safetensors       G's state dict (parameters and buffers); metadata: format, kind, config
    folder/discriminator.safetensors   D's state dict, likewise

The embedded base lives in assets/gan-mini (`resolve_base` finds it); `studio pretrain gan`
writes these files (and its checkpoint, `generators.gan.pretrain_files`) into its --out folder.
No pickle anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from generators.errors import UserError
from generators.files import atomic_save_tensors, atomic_write_json
from generators.gan.stylegan2 import Discriminator, GANConfig, Generator

FORMAT = "studio-gan-mini"
FORMAT_VERSION = 1
GENERATOR_FILE = "generator.safetensors"
DISCRIMINATOR_FILE = "discriminator.safetensors"
CONFIG_FILE = "config.json"
DEFAULT_BASE = Path("assets/gan-mini")


def _config_of(module: nn.Module, cfg: GANConfig | None) -> GANConfig:
    cfg = cfg if cfg is not None else getattr(module, "config", None)
    if not isinstance(cfg, GANConfig):
        raise ValueError("a GANConfig is needed to save this network")
    return cfg


def state_tensors(module: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors (what safetensors stores)."""
    return {prefix + k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}


def write_config(cfg: GANConfig, folder) -> Path:
    path = Path(folder) / CONFIG_FILE
    atomic_write_json(path, {"format": FORMAT, "format_version": FORMAT_VERSION, "config": cfg.to_dict()}, sort_keys=True)
    return path


def read_config(folder) -> GANConfig:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {folder} is not a gan-mini folder")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err})") from None
    if data.get("format") != FORMAT or "config" not in data:
        raise UserError(f"{path} is not a gan-mini config (format {data.get('format')!r})")
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"{path} has format version {data['format_version']}; this code reads up to {FORMAT_VERSION}")
    return GANConfig.from_dict(data["config"])


def _save_network(module, cfg, folder, file_name, kind) -> Path:
    cfg = _config_of(module, cfg)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name
    atomic_save_tensors(state_tensors(module), path,
                         {"format": FORMAT, "kind": kind, "config": json.dumps(cfg.to_dict(), sort_keys=True)})
    write_config(cfg, folder)
    return path


def _load_network(cls, folder, file_name, device):
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg = read_config(folder)
    path = folder / file_name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    net = cls(cfg)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as err:
        raise UserError(f"{path} is not a readable safetensors file ({err})") from None
    missing = sorted(set(net.state_dict()) - set(state))
    unexpected = sorted(set(state) - set(net.state_dict()))
    if missing or unexpected:
        raise UserError(f"{path} does not match its config.json (missing {missing[:3]}, unexpected {unexpected[:3]})")
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise UserError(f"{path} does not match its config.json: {str(err).splitlines()[-1].strip()}") from None
    return net.to(device).eval().requires_grad_(False)


def save_generator(G: Generator, cfg: GANConfig | None, folder) -> Path:
    """Write folder/generator.safetensors (all parameters and buffers) and folder/config.json."""
    return _save_network(G, cfg, folder, GENERATOR_FILE, "generator")


def load_generator(folder, device="cpu") -> Generator:
    """The generator saved in `folder` (safetensors only), in eval mode with requires_grad off; `.config` holds its GANConfig."""
    return _load_network(Generator, folder, GENERATOR_FILE, device)


def save_discriminator(D: Discriminator, cfg: GANConfig | None, folder) -> Path:
    """Write folder/discriminator.safetensors and folder/config.json."""
    return _save_network(D, cfg, folder, DISCRIMINATOR_FILE, "discriminator")


def load_discriminator(folder, device="cpu") -> Discriminator:
    return _load_network(Discriminator, folder, DISCRIMINATOR_FILE, device)


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
