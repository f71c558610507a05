"""Shared fixtures: tiny models built from configs (never downloaded)."""

from __future__ import annotations

import os

import pytest
import torch

# Two shared cores: one intra-op thread per process (and per subprocess) avoids the
# oversubscription that makes conv kernels spin and run many times slower.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    """A StableDiffusionPipeline folder with random tiny weights, built from configs like studio-mini."""
    from dataclasses import replace

    from generators import miniworld
    from generators.sd_mini.config import MiniBaseConfig
    from generators.sd_mini.models import build_text_encoder, build_unet, build_vae, save_pipeline
    from generators.sd_mini.tokenizer import build_tokenizer

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny")
    cfg = replace(MiniBaseConfig(), resolution=32, vae_channels=(16, 16), unet_channels=(32, 32, 32),
                  text_width=32, text_layers=1, text_heads=2, unet_heads=2)
    tok = build_tokenizer(miniworld.caption_words(), root / "tok", cfg.max_length)
    vae, unet, te = build_vae(cfg), build_unet(cfg), build_text_encoder(cfg, tok)
    out = root / "pipe"
    save_pipeline(out, vae, te, tok, unet).rename(out)
    return out
