"""How well one style fits on a base, alone: the museum's LoRA against the whole UNet.

    python bench/style_ceiling.py --fit lora|full [--styles a,b] [--checkpoints 300,1000] [--prompts 24]
        [--lr LR] [--noise-offset 0.1] [--debiased-loss] [--set KEY=VALUE] [--json F]

Each style alone, from the base, on the forgetting benchmark's ten images and captions (same world
seeds), with the diffusion loss only: no regularizer, no replay, nothing to forget. `--fit lora`
trains the museum's adapter (rank 8 on the UNet attention projections, lr 1e-3) and the style's
token, as one naive museum task; `--fit full` trains every UNet weight (lr 1e-4) and the token, the
most a fine-tune of this base can change. At each checkpoint the style evaluator reads samples
(20 steps, guidance 5) of: the ten training captions (can the fit reproduce its own data?), the
benchmark's fresh content prompts (what the forgetting benchmark scores; the kind evaluator reads
their content too) and the token alone. Side by side, the two fits say whether the adapter's
capacity is what limits a style on this base: if every UNet weight learns it no better than the
LoRA, more adapter (rank, conv layers) cannot help. The museum's own single-style run (the
forgetting benchmark's `separate`) adds the base replay, which this naive fit leaves out.

`--token-init images` starts the token where the museum starts it by default
(MuseumConfig.token_init_from_images: the base's own words for the style-family components found
on at least half of the images, e.g. "thick black outline" for flat outline); the default `mean`
starts it at the vocabulary's mean, as the milestone's series has since chunk 1.

The token has the museum's MuseumConfig.num_vectors vectors (textual inversion's num_vectors;
`--set num_vectors=N` for another count), named and written out in prompts as the museum does.
Two loss variants kohya_ss users reach for when a style's colours or darkness do not come through: `--noise-offset S` (kohya's noise_offset: a per-image,
per-channel constant of std S added to the noise, so that the model must learn global brightness
and colour) and `--debiased-loss` (kohya's debiased_estimation_loss: each sample's loss weighted by 1/sqrt(SNR),
capped at 1000, so the high-noise steps where global colour is decided count more). `--set` changes
a MuseumConfig field the fit uses (FIT_FIELDS: the adapter's rank, alpha and target modules, batch,
rates, token norm cap, token vectors), e.g. kohya's LoCon:
`--set 'target_modules=["to_q","to_k","to_v","to_out.0","conv1","conv2"]'`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from forgetting import DEFAULT_STYLES, content_prompts  # noqa: E402

from generators import captioning, diffusion, miniworld  # noqa: E402
from generators.config import with_overrides  # noqa: E402
from generators.diffusion_training import (  # noqa: E402
    TrainableTokenEmbedding,
    add_style_token,
    encode_images,
    expand_tokens,
    token_vector_names,
)
from generators.evaluators import load_evaluator  # noqa: E402
from generators.museum.config import MuseumConfig  # noqa: E402
from generators.museum.train import attach_lora  # noqa: E402
from styles.reference import apply_style  # noqa: E402

LEARNING_RATES = {"lora": MuseumConfig().lora_lr, "full": 1e-4}
# the MuseumConfig fields this fit reads; the others (steps, noise offset, the loss terms) are a
# museum task's, set here by --checkpoints and --noise-offset or absent from a naive fit
FIT_FIELDS = ("rank", "alpha", "target_modules", "batch_size", "lora_lr", "token_lr", "token_max_norm_ratio", "num_vectors")


def style_set(style_index: int, style: str, n: int, seed: int, size: int):
    """The forgetting benchmark's images for this style (bench/forgetting.py style_folders)."""
    samples = [miniworld.generate(seed, 1000 * style_index + i, size=size) for i in range(n)]
    return [apply_style(style, s.image, seed=i) for i, s in enumerate(samples)], [s.attributes.caption for s in samples]


def read_out(pipe, evaluator, style: str, token: str, captions, prompts, args) -> dict:
    """Style accuracy on training captions / fresh prompts / the token alone; kind on fresh prompts."""
    out = {}
    size = diffusion.base_resolution(pipe)
    for name, texts in (("training_captions", captions), ("fresh_prompts", [a.caption for a in prompts]), ("token_alone", [""] * 10)):
        settings = [diffusion.GenerationSettings(prompt=f"{t}, {token}" if t else token, seed=args.seed + k, steps=args.sample_steps,
                                                 guidance=args.guidance, width=size, height=size) for k, t in enumerate(texts)]
        pred = evaluator.predict(diffusion.generate(pipe, settings, batch_size=16))
        out[name] = float(np.mean([p == style for p in pred["style"]]))
        if name == "fresh_prompts":
            out["fresh_prompts_kind"] = float(np.mean([p == a.kind for p, a in zip(pred["kind"], prompts)]))
    return out


def fit(style_index: int, style: str, cfg: MuseumConfig, evaluator, prompts, args) -> dict:
    """One style from a fresh copy of the base; read out at every checkpoint."""
    torch.manual_seed(args.seed)
    pipe = diffusion.load_base(args.base, args.device)
    unet, text_encoder, tokenizer = pipe.unet, pipe.text_encoder, pipe.tokenizer
    images, captions = style_set(style_index, style, args.images, args.seed, diffusion.base_resolution(pipe))
    token = f"<{style}>"  # the pipeline writes a multi-vector token out as its entries when it samples
    names = token_vector_names(token, cfg.num_vectors)
    # the museum's token start (MuseumConfig.token_init_from_images): the base's words for what the images show
    init_words = captioning.style_words(images, args.base, tokenizer) if args.token_init == "images" else ()
    token_ids = [add_style_token(tokenizer, text_encoder, name, init_words) for name in names]
    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)
    if args.fit == "full":
        params = list(unet.parameters())
    else:
        attach_lora(unet, cfg, None)
        params = [p for n, p in unet.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    from diffusers import DDPMScheduler

    alphas = DDPMScheduler.from_config(pipe.scheduler.config).alphas_cumprod.to(unet.device)
    means, stds = encode_images(pipe.vae, images, unet.device)
    ids = tokenizer(expand_tokens(tokenizer, [f"{c}, {token}" for c in captions]), padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids.to(unet.device)
    mean_norm = text_encoder.get_input_embeddings().weight[: token_ids[0]].norm(dim=1).mean()
    gen = torch.Generator().manual_seed(args.seed)
    rows, start = {}, time.time()
    embedding = TrainableTokenEmbedding(text_encoder.get_input_embeddings(), token_ids)
    text_encoder.set_input_embeddings(embedding)
    vectors = embedding.rows
    lr = args.lr or (cfg.lora_lr if args.fit == "lora" else LEARNING_RATES["full"])
    opt = torch.optim.AdamW([{"params": params, "lr": lr},
                             {"params": [vectors], "lr": cfg.token_lr}], weight_decay=0.0)
    for step in range(1, max(args.checkpoints) + 1):
        unet.train()
        idx = torch.randint(len(images), (cfg.batch_size,), generator=gen)
        z0 = means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=gen).to(unet.device)
        noise = torch.randn(z0.shape, generator=gen).to(unet.device)
        if args.noise_offset:
            noise = noise + args.noise_offset * torch.randn(z0.shape[:2] + (1, 1), generator=gen).to(unet.device)
        t = torch.randint(0, len(alphas), (cfg.batch_size,), generator=gen).to(unet.device)
        a = alphas[t][:, None, None, None]
        pred = unet(a.sqrt() * z0 + (1 - a).sqrt() * noise, t, encoder_hidden_states=text_encoder(ids[idx.to(unet.device)])[0]).sample
        loss = F.mse_loss(pred.float(), noise, reduction="none").mean((1, 2, 3))
        if args.debiased_loss:
            snr = alphas[t] / (1 - alphas[t])
            loss = loss * snr.rsqrt().clamp(max=1000.0)
        loss = loss.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():  # the museum's token norm cap
            vectors.mul_((cfg.token_max_norm_ratio * mean_norm / vectors.norm(dim=1, keepdim=True)).clamp(max=1.0))
        if step in args.checkpoints:
            unet.eval()
            with torch.no_grad():
                rows[step] = {**read_out(pipe, evaluator, style, token, captions, prompts, args),
                              "loss": float(loss), "seconds": round(time.time() - start, 1), "token_init": " ".join(init_words)}
            print(f"  {args.fit} {style} @{step}: " + " ".join(f"{k} {v:.2f}" for k, v in rows[step].items() if k != "token_init"),
                  f"(token from: {' '.join(init_words) or 'the vocabulary mean'})", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fit", choices=sorted(LEARNING_RATES), required=True)
    p.add_argument("--styles", default=",".join(DEFAULT_STYLES), help="the forgetting benchmark's order: it picks each style's images")
    p.add_argument("--images", type=int, default=10)
    p.add_argument("--checkpoints", default="300,1000", help="steps at which the fit is read out")
    p.add_argument("--prompts", type=int, default=24, help="fresh content prompts (the forgetting benchmark's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate of the fitted weights (default: 1e-3 lora, 1e-4 full)")
    p.add_argument("--token-init", choices=("mean", "images"), default="mean",
                   help="start the token at the vocabulary's mean (the milestone's series so far) or, as the museum "
                        "does by default, at the base's words for the components its images show")
    p.add_argument("--noise-offset", type=float, default=0.0, help="std of kohya's per-channel noise offset (0: off)")
    p.add_argument("--debiased-loss", action="store_true", help="weight each sample's loss by 1/sqrt(SNR) (kohya)")
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--base", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a MuseumConfig field of the fit, e.g. --set rank=16 (repeatable)")
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args()
    unused = [pair.partition("=")[0] for pair in args.set if pair.partition("=")[0].strip() not in FIT_FIELDS]
    if unused:
        p.error(f"--set {', '.join(unused)}: this fit reads only {', '.join(FIT_FIELDS)}")
    try:
        cfg = with_overrides(MuseumConfig(), args.set)  # the museum's adapter, batch, rates and token norm cap
    except (ValueError, TypeError) as e:
        p.error(f"--set: {e}")
    args.checkpoints = sorted(int(s) for s in args.checkpoints.split(","))
    if args.threads:
        torch.set_num_threads(args.threads)
    evaluator = load_evaluator()
    prompts = content_prompts(args.prompts, args.seed)
    styles = args.styles.split(",")
    all_styles = list(DEFAULT_STYLES) + [s for s in styles if s not in DEFAULT_STYLES]
    results = {style: fit(all_styles.index(style), style, cfg, evaluator, prompts, args) for style in styles}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                                     "config": {k: getattr(cfg, k) for k in FIT_FIELDS}, "results": results}, indent=2) + "\n")
    for step in args.checkpoints:
        mean = {k: np.mean([results[s][step][k] for s in styles]) for k in results[styles[0]][step] if k != "token_init"}
        print(f"{args.fit} @{step} mean over {len(styles)} styles: " + " ".join(f"{k} {v:.2f}" for k, v in mean.items()))


if __name__ == "__main__":
    main()
