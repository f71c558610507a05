"""SDXL bases (issue 32): the family adapters, generation, the museum, exports, single files and
synthetic fits on a tiny StableDiffusionXLPipeline built from configs (never downloaded)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from generators import bases, diffusion


def build_tiny_sdxl(root):
    """A StableDiffusionXLPipeline with random tiny weights, laid out as SDXL is (three UNet levels,
    attention in the lower two, text_time added conditioning, CLIP-L + CLIP-G with projection)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from generators import miniworld
    from generators.sd_mini.tokenizer import build_tokenizer

    torch.manual_seed(0)
    build_tokenizer(miniworld.caption_words(), root / "tok", 40)
    tok, tok2 = CLIPTokenizer.from_pretrained(root / "tok"), CLIPTokenizer.from_pretrained(root / "tok")

    def text_config(width):
        return CLIPTextConfig(vocab_size=len(tok), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                              num_attention_heads=2, max_position_embeddings=40, bos_token_id=tok.bos_token_id,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, projection_dim=16)

    te, te2 = CLIPTextModel(text_config(16)), CLIPTextModelWithProjection(text_config(24))
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 32, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=2,
        use_linear_projection=True, cross_attention_dim=16 + 24, addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 16, transformer_layers_per_block=1)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32), layers_per_block=2,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        sample_size=32, scaling_factor=0.13025)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok2,
                                     unet=unet, scheduler=scheduler)
    out = root / "sdxl"
    pipe.save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory):
    return build_tiny_sdxl(tmp_path_factory.mktemp("tiny-sdxl"))


def test_family_of_folders_and_the_adapter(sdxl_dir, tiny_pipeline_dir):
    assert bases.family_of_folder(sdxl_dir) == "sdxl"
    assert bases.family_of_folder(tiny_pipeline_dir) == "sd"
    assert bases.family_of(None) == "sd"
    pipe = diffusion.load_base(str(sdxl_dir), device="cpu")
    assert type(pipe).__name__ == "StableDiffusionXLPipeline" and diffusion.base_resolution(pipe) == 32
    assert diffusion.resolution_of(str(sdxl_dir)) == 32
    ad = bases.adapter(pipe)
    assert ad.family == "sdxl"
    # The adapter's conditioning is exactly the pipeline's own encode_prompt.
    prompt = "a red star on the grass background"
    ids = ad.tokenize(pipe, [prompt])
    with torch.no_grad():
        cond = ad.encode(pipe, ids, 32)
        embeds, _, pooled, _ = pipe.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=False)
    assert torch.allclose(cond["encoder_hidden_states"], embeds, atol=1e-6)
    assert torch.allclose(cond["text_embeds"], pooled, atol=1e-6)
    assert cond["time_ids"].tolist() == [[32, 32, 0, 0, 32, 32]]
    with torch.no_grad():
        out = ad.unet(pipe.unet, torch.zeros(1, 4, 16, 16), torch.tensor([10]), cond)
    assert out.shape == (1, 4, 16, 16)


def test_generate_on_sdxl(sdxl_dir, tmp_path):
    from studio.cli import main

    args = ["generate", "--prompt", "a blue fish on the sea background", "--n", "2", "--seed", "3", "--steps", "2",
            "--base", str(sdxl_dir), "--device", "cpu"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "seed3.png").read_bytes() == (tmp_path / "b" / "seed3.png").read_bytes()
    with Image.open(tmp_path / "a" / "seed4.png") as im:
        assert im.size == (32, 32) and im.text["seed"] == "4" and im.text["base"] == str(sdxl_dir)
    assert json.loads((tmp_path / "a" / "seed4.json").read_text())["scheduler"] == "EulerDiscreteScheduler"
