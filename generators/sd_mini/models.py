"""studio-mini's components, built from a MiniBaseConfig: the autoencoder, the UNet, the text
encoder and the schedulers (SD 1.x's scaled-linear betas), the style words' tokens, weight
copies for warm starts, and saving the whole as a diffusers StableDiffusionPipeline folder."""

from __future__ import annotations

from pathlib import Path

import torch

from generators.sd_mini.config import MiniBaseConfig


def build_vae(cfg: MiniBaseConfig):
    from diffusers import AutoencoderKL

    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.vae_channels),
        layers_per_block=cfg.vae_layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=8,
        sample_size=cfg.resolution,
    )


def build_unet(cfg: MiniBaseConfig):
    """The UNet. With cfg.unet_pooled_text its pooled-prompt embedding starts silent (output norm
    zeroed), so a warm start from a UNet without it begins as that UNet and grows the new path."""
    from diffusers import UNet2DConditionModel

    from generators.errors import UserError

    if len(cfg.unet_attention) != len(cfg.unet_channels):
        raise UserError(f"unet_attention {list(cfg.unet_attention)} needs one entry per unet_channels level "
                        f"{list(cfg.unet_channels)}")
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.unet_attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.unet_attention))
    unet = UNet2DConditionModel(
        sample_size=cfg.resolution // 2 ** (len(cfg.vae_channels) - 1),
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(cfg.unet_channels),
        layers_per_block=cfg.unet_layers_per_block,
        cross_attention_dim=cfg.text_width,
        attention_head_dim=cfg.unet_heads,
        norm_num_groups=cfg.unet_norm_groups,
        addition_embed_type="text" if cfg.unet_pooled_text else None,
        addition_embed_type_num_heads=cfg.unet_heads,
    )
    if cfg.unet_pooled_text:
        with torch.no_grad():
            unet.add_embedding.norm2.weight.zero_()
            unet.add_embedding.norm2.bias.zero_()
    return unet


def build_text_encoder(cfg: MiniBaseConfig, tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.text_width,
        intermediate_size=cfg.text_width * 4,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=cfg.max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=cfg.text_width,
    )
    return CLIPTextModel(config)


def training_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def sampling_scheduler():
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )


def add_style_words(tokenizer, text_encoder, words) -> list[str]:
    """Make each style name one token, added as a museum adds a style's token (at the vocabulary's
    mean). Returns the names added."""
    from generators.diffusion_training import add_style_token

    missing = [w for w in words if len(tokenizer(w, add_special_tokens=False).input_ids) != 1]
    for word in missing:
        add_style_token(tokenizer, text_encoder, word)
    return missing


@torch.no_grad()
def copy_matching_weights(source: torch.nn.Module, target: torch.nn.Module) -> tuple[int, list[str]]:
    """Copy every tensor of source's state dict into target where name and shape match.
    Returns (number copied, names left as initialised).

    Two UNets with different numbers of levels are matched from the coarsest level: the source's
    down_blocks.i is the target's down_blocks.(i + added) (levels added in front, for a finer
    latent, start fresh; with fewer levels the source's finest are dropped); up_blocks keep their
    index, since they run coarsest first."""
    src, dst = source.state_dict(), target.state_dict()
    added = len(getattr(target, "down_blocks", ())) - len(getattr(source, "down_blocks", ()))
    if added:
        shifted = {_shift_down_block(k, added): v for k, v in src.items()}
        src = {k: v for k, v in shifted.items() if k is not None}
    fresh = [k for k in dst if k not in src or src[k].shape != dst[k].shape]
    target.load_state_dict({k: (dst[k] if k in fresh else src[k]) for k in dst})
    return len(dst) - len(fresh), fresh


def _shift_down_block(name: str, by: int) -> str | None:
    """`name` with its down_blocks index moved by `by`; None where that falls below the first level."""
    if not name.startswith("down_blocks."):
        return name
    _, index, rest = name.split(".", 2)
    return f"down_blocks.{int(index) + by}.{rest}" if int(index) + by >= 0 else None


def save_pipeline(out_dir: Path, vae, text_encoder, tokenizer, unet) -> Path:
    """The pipeline written to a fresh `<out_dir>.partial` folder (returned): the caller renames it into place."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae.to("cpu", torch.float32),
        text_encoder=text_encoder.to("cpu", torch.float32),
        tokenizer=tokenizer,
        unet=unet.to("cpu", torch.float32),
        scheduler=sampling_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    tmp = out_dir.with_name(out_dir.name + ".partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    pipe.save_pretrained(tmp, safe_serialization=True)
    from generators.files import honour_umask

    for weights in tmp.rglob("*.safetensors"):  # safetensors writes them 0600
        honour_umask(weights)
    return tmp
