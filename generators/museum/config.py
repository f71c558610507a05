"""One config object per museum task; saved in every manifest and checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from generators.config import SavedConfig
from generators.errors import UserError


@dataclass
class MuseumConfig(SavedConfig):
    # Fixed by a museum's first task: its styles share one LoRA.
    SHARED_FIELDS: ClassVar[tuple[str, ...]] = ("rank", "alpha", "target_modules")
    # How a task runs, not what it learns: these may change when an interrupted task resumes.
    RUN_FIELDS: ClassVar[tuple[str, ...]] = ("checkpoint_every", "precision", "gradient_checkpointing",
                                             "sample_steps", "guidance")
    # What a saved config without the field meant, where the default changed since: a task saved
    # before noise_offset existed trained without it.
    ABSENT_MEANS: ClassVar[dict] = {"noise_offset": 0.0, "captioner": "none", "token_init_from_images": False,
                                    "num_vectors": 1}

    # Shared LoRA (peft) on the UNet attention projections.
    rank: int = 8
    alpha: float = 8.0
    target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    # Optimisation.
    steps: int = 300
    batch_size: int = 8
    lora_lr: float = 1e-3
    token_lr: float = 5e-3
    token_max_norm_ratio: float = 2.0  # cap each of the token's vectors' norm at this × the mean vocabulary norm
    # Vectors of the style's token (textual inversion's num_vectors): the prompt says the token and
    # it takes this many of the prompt's positions, as stock diffusers and A1111 read such an embedding.
    # 4 since 2026-12-07 (1 before): on studio-mini 2 (chunk 14, two training seeds) Average 0.54 -> 0.65
    # at the same Forgetting (0.09), content 0.75 -> 0.70; docs/lab/2026-12-notebook.md, chunk 14.
    num_vectors: int = 4
    # Words of the base whose mean embedding starts the token (textual inversion's initializer
    # token, e.g. a base's style names); empty: the vocabulary's mean.
    token_init: tuple[str, ...] = ()
    # With token_init empty: start the token at the base's own words for what the style images show
    # (captioning.style_words: the style-family components found on half of them, on studio-mini 2),
    # where the base has such words; otherwise, and with False, at the vocabulary's mean.
    token_init_from_images: bool = True
    # λ of the token term: cos² of the new token's direction (from the vocabulary's mean) with each
    # earlier token's, so that styles do not share one token direction (0: off). losses.token_overlap_loss
    token_orthogonality: float = 0.0
    # kohya's noise_offset: a per-image, per-channel constant of this std added to the style
    # images' noise, so the task must learn the style's global colour and darkness, which the
    # schedule otherwise leaks through from the data even at the noisiest step (0: off). 0.1 on
    # studio-mini 2: Average 0.57 -> 0.61, Forgetting 0.10 -> 0.07, content 0.45 -> 0.54 (on the
    # first studio-mini it doubled Forgetting; pass 0 there). docs/lab/2026-12-notebook.md.
    noise_offset: float = 0.1
    # Who captions an image that comes without a caption file (generators/captioning.py): "auto"
    # (the mini world's evaluator on a Studio-pretrained base, else none), "mini-world", "none"
    # (train as "a picture"), or a transformers image-to-text model (BLIP, GIT) by folder or hub id.
    captioner: str = "auto"
    checkpoint_every: int = 50
    seed: int = 0
    # Loss terms (each switchable; the defaults are the full method as measured best on studio-mini 2).
    use_sdl: bool = True
    lambda_sdl: float = 0.05
    sdl_tau: float = 1.0
    # The weight term (MuseumMaker's weight aspect) is off by default since 2026-12-07: on studio-mini 2
    # (chunk 11, two training seeds) it held each new style back (diagonal 0.39 against 0.59) and
    # lowered Forgetting no further than the feature term at λ_f = 4 does (0.09 against 0.07).
    # --weight-reg / use_weight_reg=True brings it back. docs/lab/2026-12-notebook.md, chunk 12.
    use_weight_reg: bool = False
    lambda_w: float = 1.0
    weight_reg_warmup: int = 0  # steps over which λ_w ramps in linearly from 0 (0: at full weight from the start)
    # "cosine": cos² of this task's update with the earlier ones (holds old styles and plain prompts,
    # takes later styles poorly); "projection": the update's run along them relative to their size
    # (takes later styles about as a fresh LoRA, forgets more); "gated": the projection's pull until
    # the update is as large as the earlier ones, the cosine's after. losses.weight_direction_loss.
    weight_reg_form: str = "cosine"
    use_feature_reg: bool = True
    # 1 until 2026-12-07, then 4 with the weight term off (Average 0.45 -> 0.53, Forgetting 0.09 -> 0.07);
    # 8 since the four-vector token: Forgetting 0.09 -> 0.04 at the same Average (0.65 / 0.64), content
    # 0.70 -> 0.67 (chunk 14, two training seeds; docs/lab/2026-12-notebook.md, fifteenth session).
    lambda_f: float = 8.0
    replay_pool: int = 32  # replay prompts: cached (noisy latent, t, earlier-style prompt, teacher output) samples
    preserve_base: bool = True  # plain prompts (no token) join the replay: the style lives behind its token
    replay_base_weight: float = 1.0  # the feature term's weight on the base's (plain) replay samples, relative to earlier styles'
    # Content prompts of the mini world's kind (plain English, any base reads them) that join the
    # base's replay beside the style's own captions (0: its captions only). A folder without
    # captions gives the base replay one prompt, "a picture", which leaves every other plain prompt
    # free to drift; these keep the shared LoRA off plain prompts of other content.
    base_replay_prompts: int = 0
    # The feature term runs its own forward and backward on replay_batch samples (None: as many
    # as the style batch, so peak memory stays the style batch's) every k-th step, k set so that
    # replay samples average replay_share of the style samples (k = 4 by default).
    replay_batch: int | None = None
    replay_share: float = 0.25
    train_token: bool = True
    # Memory and speed: autocast dtype of the forward passes ("fp32", "bf16", "fp16"; the LoRA and
    # the token stay fp32, fp16 adds loss scaling) and activation recomputation in the UNet.
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    # Sampling defaults for previews and scores.
    sample_steps: int = 20
    guidance: float = 5.0

    def __post_init__(self):
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise UserError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if self.weight_reg_form not in ("cosine", "projection", "gated"):
            raise UserError(f"weight_reg_form must be cosine, projection or gated, got {self.weight_reg_form!r}")
        if self.weight_reg_warmup < 0:
            raise UserError(f"weight_reg_warmup must be >= 0, got {self.weight_reg_warmup}")
        if self.num_vectors < 1:
            raise UserError(f"num_vectors must be >= 1, got {self.num_vectors}")
        if self.noise_offset < 0:
            raise UserError(f"noise_offset must be >= 0, got {self.noise_offset}")
        if self.replay_base_weight < 0:
            raise UserError(f"replay_base_weight must be >= 0, got {self.replay_base_weight}")


def check_shared_lora(first: MuseumConfig, asked: dict, root) -> None:
    """Refuse a task whose LoRA shape differs from the museum's (fixed by its first task, `first`):
    `asked` holds the SHARED_FIELDS a front or caller set. The one check and message of
    ingest.task_config (a front's overrides) and engine.learn (a library caller's config)."""
    for key in MuseumConfig.SHARED_FIELDS:
        if key in asked and asked[key] != getattr(first, key):
            raise UserError(f"museum {root} shares one LoRA with {key} {getattr(first, key)!r}; "
                            f"{key} {asked[key]!r} cannot change it (use another museum)")
