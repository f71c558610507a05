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


def tiny_blip(folder, says: str | None = None, safetensors: bool = True):
    """A random tiny BLIP captioner (transformers) saved to `folder`; with `says`, that word's output
    bias is large, so every caption repeats it; safetensors=False: pickled weights only."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    words = "[PAD] [UNK] [CLS] [SEP] [MASK] the a of sky grass background is bird fish left right facing small".split()
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(words)}, bos_token="[CLS]")
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    text = dict(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=64, bos_token_id=2, sep_token_id=3, pad_token_id=0, eos_token_id=3)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision, projection_dim=32))
    if says:
        with torch.no_grad():
            model.text_decoder.cls.predictions.bias[words.index(says)] = 50.0
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    if not safetensors:  # a pickled checkpoint, as older hub folders hold
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    return folder
