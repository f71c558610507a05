"""What the engines that train a diffusion model share: the museum (generators/museum/train.py),
the synthetic fit (generators/synthetic/fit.py) and studio-mini's pretraining
(generators/sd_mini/pretrain.py). Tokens (a new word in the vocabulary; a few trainable rows of
the embedding table), latents (a style or class set encoded once), and the noising and targets
of the training objective.

Noising and the v-prediction target are diffusers' own (DDPMScheduler.add_noise, get_velocity:
tests/test_plumbing.py checks they give the same tensors as the formulas they replaced). Kept
here instead of a library's: min_snr_weight (diffusers.training_utils.compute_snr goes through
square roots and differs in the last bits, which would move the studio-mini 2 campaign's resumed
chunks off their exact path) and the synthetic fit's warmup (diffusers' cosine schedule starts at
lr 0, ours at lr/warmup: a different schedule, so different figures).
"""

from __future__ import annotations

import numpy as np
import torch

from generators.errors import UserError

LOSS_EVERY = 10  # steps between loss read-outs for progress (each read-out is a host sync)


# --- tokens ----------------------------------------------------------------------------------


def add_style_token(tokenizer, text_encoder, token: str, init_words: tuple[str, ...] = ()) -> int:
    """Add `token` to the vocabulary, initialised at the mean embedding of `init_words` (textual
    inversion's initializer token; each must be one token of the base) or, without them, of the
    whole vocabulary; returns its id."""
    init_ids = []
    for word in init_words:
        ids = tokenizer(word, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise UserError(f"token_init word {word!r} is not one token of the base's vocabulary ({len(ids)} tokens); "
                            f"choose words the base knows")
        init_ids += ids
    if tokenizer.add_tokens(token) != 1:
        raise UserError(f"token {token!r} already exists in the base's vocabulary; choose another token")
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    emb = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        emb[-1] = emb[init_ids].mean(0) if init_ids else emb[:-1].mean(0)
    return len(tokenizer) - 1


def token_vector_names(token: str, num_vectors: int) -> list[str]:
    """The vocabulary entries of a token of `num_vectors` vectors, named as stock diffusers'
    load_textual_inversion names them ("<s>", "<s>_1", "<s>_2", ...): a prompt says "<s>" and
    expand_tokens writes out the rest."""
    return [token] + [f"{token}_{i}" for i in range(1, num_vectors)]


def expand_tokens(tokenizer, prompts: str | list[str]) -> str | list[str]:
    """Prompts with each multi-vector token written out as its entries ("<s>" -> "<s> <s>_1 <s>_2"),
    by diffusers' own rule (TextualInversionLoaderMixin.maybe_convert_prompt, which a pipeline
    applies before it tokenizes): training tokenizes exactly what sampling will."""
    from diffusers.loaders import TextualInversionLoaderMixin

    return TextualInversionLoaderMixin().maybe_convert_prompt(prompts, tokenizer)


class TrainableTokenEmbedding(torch.nn.Module):
    """The text encoder's token embedding with some rows served by one trainable (n × D) matrix.

    Only `rows` is a parameter, so the optimizer and the gradient hold n D-vectors instead of
    the whole vocabulary (49,408 × 768 for SD's CLIP-L); every other token stays frozen by
    construction. The museum trains one row (a style's token), a synthetic fit one per class.

    Why not peft's trainable tokens (`TrainableTokensConfig` / `TrainableTokensLayer`, which does
    train a few rows of an embedding): its trained rows take the embedding's dtype (fp16/bf16
    when the text encoder is loaded in half precision), where ours are an fp32 master copy cast at
    use; every forward it builds a merged copy of the whole vocabulary table (`index_copy`) before
    `F.embedding`, where ours gathers the n rows and picks them with `torch.where`; and it lives
    inside a PeftModel/adapter (injected by target_modules, saved via get_peft_model_state_dict as
    `trainable_tokens_delta` adapter keys). Ours is swapped in for a block and written back into
    the plain embedding (museum `trainable_token`), so the text encoder stays a plain transformers
    module and each learnt row goes to the stores as a textual-inversion vector.
    """

    def __init__(self, embedding: torch.nn.Embedding, token_ids: list[int]):
        super().__init__()
        self.embedding = embedding
        self.register_buffer("token_ids", torch.tensor(token_ids, dtype=torch.long), persistent=False)
        # A child after the embedding, not a direct parameter: the text encoder's first parameter
        # (what its `.dtype` reports) stays the frozen table's, not this fp32 master copy.
        self.trained = torch.nn.ParameterList([embedding.weight[token_ids].detach().float().clone()])

    @property
    def rows(self) -> torch.nn.Parameter:
        return self.trained[0]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.embedding(input_ids)
        match = input_ids[..., None] == self.token_ids.to(input_ids.device)
        served = self.rows.to(out.dtype)[match.long().argmax(-1)]
        return torch.where(match.any(-1, keepdim=True), served, out)


# --- latents ---------------------------------------------------------------------------------


@torch.no_grad()
def encode_images(vae, images, device, batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled posterior means and stds, encoded a batch at a time (peak memory of one batch)."""
    means, stds = [], []
    for i in range(0, len(images), batch_size):
        x = torch.stack([torch.from_numpy(np.asarray(im, np.float32)).permute(2, 0, 1)
                         for im in images[i : i + batch_size]]) / 127.5 - 1
        dist = vae.encode(x.to(device, vae.dtype)).latent_dist
        means.append(dist.mean.float())
        stds.append(dist.std.float())
    scale = vae.config.scaling_factor
    return torch.cat(means) * scale, torch.cat(stds) * scale


# --- the objective ---------------------------------------------------------------------------


def noise_scheduler(pipe):
    """The DDPM training schedule of a pipeline's sampler (its betas and prediction type)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config)


def offset_noise(shape, offset: float, generator: torch.Generator, device) -> torch.Tensor:
    """Gaussian noise of `shape`, plus, when offset > 0, a per-sample, per-channel constant of std
    `offset` (kohya's noise_offset): the model must then learn each image's overall colour and
    darkness, which the schedule otherwise leaks through from the data even at the noisiest step.
    Drawn from `generator` on its own device; the constant is drawn only when on, so a run without
    it keeps its random stream."""
    noise = torch.randn(shape, generator=generator, device=generator.device)
    if offset:
        constant = torch.randn(tuple(shape[:2]) + (1,) * (len(shape) - 2), generator=generator, device=generator.device)
        noise = noise + offset * constant
    return noise.to(device)


def prediction_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet is trained to predict: the velocity for a v-prediction base (SD 2.x at 768 px),
    else the noise."""
    if scheduler.config.get("prediction_type", "epsilon") == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    return noise


def min_snr_weight(alphas: torch.Tensor, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-γ loss weights min(SNR, γ) / SNR of an ε-prediction loss (Hang et al. 2023), with
    SNR = ᾱ / (1 - ᾱ) from the cumulative alphas."""
    snr = alphas[t] / (1 - alphas[t])
    return torch.clamp(snr, max=gamma) / snr
