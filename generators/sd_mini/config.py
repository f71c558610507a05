"""studio-mini's one config object (no torch import, so the CLI can show its defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field

from generators.config import SavedConfig


@dataclass
class MiniBaseConfig(SavedConfig):
    resolution: int = 64
    max_length: int = 40
    # Autoencoder: 64 px -> 16x16x8 latents (4 channels lost object colours; docs/design.md).
    vae_channels: tuple[int, ...] = (16, 32, 64)
    vae_layers_per_block: int = 1
    latent_channels: int = 8
    # UNet on 16x16 latents, cross-attention at 16 and 8.
    unet_channels: tuple[int, ...] = (32, 64, 128)
    # Which of the UNet's levels (one per unet_channels entry, finest first) have cross-attention.
    # On a 32x32 latent ([16, 32] autoencoder) a convolution-only level in front, (False, True, True,
    # False) with channels (32, 32, 64, 128), keeps attention at 16 and 8: 1.45x a 16x16 step's
    # cost where attention at 32 costs 8x (docs/lab/2026-12-notebook.md, chunk 9).
    unet_attention: tuple[bool, ...] = (True, True, False)
    unet_norm_groups: int = 16
    unet_layers_per_block: int = 1
    unet_heads: int = 4
    # The prompt also pooled (attention pooling) into the timestep embedding that every ResNet
    # block receives: diffusers' addition_embed_type="text". Cross-attention alone learnt colour
    # and background but left the object's kind to chance on a CPU budget (docs/design.md).
    unet_pooled_text: bool = True
    # Text encoder.
    text_width: int = 128
    text_layers: int = 3
    text_heads: int = 4
    # Training.
    n_images: int = 60_000
    vae_batch: int = 32
    vae_lr: float = 2e-3
    # Continuing a trained autoencoder (--resume with --vae-seconds): weight of the anchor that keeps
    # its posterior means (in the UNet's scaled units) near where they were, so the UNet trained on
    # them stays close to valid while the autoencoder learns what it could not reconstruct.
    vae_anchor: float = 1.0
    # Weight of a match of local high-frequency energy between reconstruction and input (phase-free,
    # so grain it cannot place pixel-exact can still be drawn where MSE + L1 alone return its local
    # mean; docs/lab/2026-12-notebook.md, chunk 5). 0: the plain autoencoder.
    vae_detail: float = 0.0
    unet_batch: int = 32
    unet_lr: float = 5e-4
    # kohya's noise offset in the UNet's training noise (generators/diffusion_training.offset_noise):
    # the base itself learns to set an image's overall colour and darkness from its prompt, which
    # the styles a museum teaches on it (dark or tinted backgrounds) need. 0: plain noise.
    noise_offset: float = 0.0
    min_snr_gamma: float = 5.0  # Min-SNR loss weighting (Hang et al. 2023): faster convergence
    save_every_seconds: float = 600.0
    warmup_steps: int = 300
    caption_dropout: float = 0.1
    ema_decay: float = 0.999
    data_seed: int = 1000
    # Name each bird's subclass in its caption ("a red sparrow bird ...", every other one without
    # the colour word): the stand-in for a real base's prior on species, which BOB and DataDream
    # build on (docs/lab/2026-12-notebook.md, Synthetic data).
    species_captions: bool = False
    # Fraction of the training images that are birds (None: every kind equally often).
    bird_share: float | None = None
    # Reference styles drawn into the training set with the style's name ending the caption ("...,
    # at the top right, sepia"), each name one token: the stand-in for a real base's knowledge of
    # styles by name, which a museum's learnt token moves within (docs/lab/2026-12-notebook.md, Forgetting).
    # The forgetting benchmark's own styles must stay out of it.
    caption_styles: tuple[str, ...] = ()
    style_share: float = 0.0  # fraction of the training images drawn in one of caption_styles
    # studio-mini 2's world (generators/sd_mini/style_family.py): that fraction of the images drawn
    # with one to three style components whose words end the caption, and captions in the prompt
    # forms the product writes (colour word or not, category words, birds by subclass).
    family_share: float = 0.0
    product_captions: bool = False
    # A weight per family component (others 1; style_family.sample_components): more of the
    # components a base draws worst, a data-mix lever for a stalled milestone. Empty: uniform.
    family_emphasis: dict = field(default_factory=dict)
    # "cosine" decays over each run's time budget; "constant" (after warmup) suits a campaign of
    # resumed chunks, where the EMA does the averaging.
    lr_schedule: str = "cosine"
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.family_emphasis:
            from generators.sd_mini.style_family import check_emphasis

            check_emphasis(self.family_emphasis)
