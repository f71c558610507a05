"""Learning one style: a museum task (MuseumMaker, docs/methods.md §1).

    loss = L_diff(style images, prompts carrying <token>)
         + λ_sdl · L_SDL   (style distillation: against the content bias of the few images)
         + λ_w   · L_w     (weight aspect: this task's LoRA update vs earlier tasks' updates)
         + λ_f   · L_f     (feature aspect: earlier styles' and the base's predictions vs the pre-task model)

Trained: the shared LoRA (continued from the previous task's state) and the new token's
embedding (its own vector while training, written into its row after); everything else, earlier
tokens included, is frozen. The feature term's replay
batch gets its own forward and backward pass (so peak memory is the style batch's), every few
steps so that it costs about a quarter of the style batch; the replay pool's teacher outputs
are computed once, before the first update, because the teacher is exactly the model at the
start of the task.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from generators import bases, diffusion, miniworld
from generators.diffusion_training import (
    LOSS_EVERY,
    TrainableTokenEmbedding,
    add_style_token,
    encode_images,
    expand_tokens,
    noise_scheduler,
    offset_noise,
    prediction_target,
    token_vector_names,
)
from generators.errors import UserError
from generators.files import CHECKPOINT_FILE, atomic_save_tensors
from generators.museum import losses
from generators.museum.config import MuseumConfig
from generators.optim_state import load_optimizer, optimizer_tensors
from generators.precision import autocast as precision_autocast, grad_scaler
from generators.run import Run, as_run

ADAPTER = "museum"


def style_prompt(content: str, tokens: list[str]) -> str:
    """The prompt for `content` in the given styles: tokens already present are not repeated."""
    missing = [t for t in tokens if t not in content]
    return ", ".join([content] + missing) if missing else content


def fit_prompt(tokenizer, content: str, tokens: list[str]) -> str:
    """style_prompt, with the content cut to its longest run of leading words with which the style
    tokens fit in the tokenizer's window (otherwise truncation would cut the tokens off, and they
    would learn nothing), a multi-vector token counted with all its entries. Every word is at least
    one token, so only the first window's worth of words is searched, by bisection: a caption of
    any length costs a few short tokenizations."""
    limit = tokenizer.model_max_length

    def fits(prompt: str) -> bool:
        return len(tokenizer(expand_tokens(tokenizer, prompt)).input_ids) <= limit

    parts = content.split(maxsplit=limit)  # with more than `limit` words, the last part is the rest
    if len(parts) <= limit:
        prompt = style_prompt(content, tokens)
        if fits(prompt):
            return prompt
    words = parts[:limit]
    lo, hi = 0, len(words) - 1  # the whole never fits: the longest fitting prefix has lo..hi words
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(style_prompt(" ".join(words[:mid]), tokens)):
            lo = mid
        else:
            hi = mid - 1
    return style_prompt(" ".join(words[:lo]), tokens)


def fit_prompt_with_note(tokenizer, content: str, tokens: list[str]) -> tuple[str, str | None]:
    """fit_prompt, and where it shortened the content, the one line a front shows about it (the
    shortened prompt itself is the front's to show)."""
    fitted = fit_prompt(tokenizer, content, tokens)
    whole = style_prompt(content, tokens)
    if fitted == whole:
        return fitted, None
    length = len(tokenizer(expand_tokens(tokenizer, whole)).input_ids)
    return fitted, (f"the prompt is {length} tokens with its styles and the base reads "
                    f"{tokenizer.model_max_length}; shortened to keep the styles")


# --- LoRA and token plumbing ----------------------------------------------------------------


def lora_layers(unet) -> dict[str, torch.nn.Module]:
    return {name: m for name, m in unet.named_modules() if hasattr(m, "lora_A") and ADAPTER in m.lora_A}


def attach_lora(unet, cfg: MuseumConfig, state: dict[str, torch.Tensor] | None) -> None:
    """Add the shared adapter to `unet` (peft), loaded from a stored state if there is one."""
    from peft import LoraConfig
    from peft.utils import set_peft_model_state_dict

    unet.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=list(cfg.target_modules),
                                init_lora_weights=True), adapter_name=ADAPTER)
    if state is not None:
        peft_state = {k.removeprefix("unet."): v for k, v in state.items()}
        result = set_peft_model_state_dict(unet, peft_state, adapter_name=ADAPTER)
        if getattr(result, "unexpected_keys", None):
            raise UserError(f"stored LoRA state does not fit this base's UNet: {result.unexpected_keys[:3]}")


def lora_state(unet) -> dict[str, torch.Tensor]:
    """The shared LoRA in the key format of diffusers' save_lora_weights (peft keys, 'unet.' prefix)."""
    from peft.utils import get_peft_model_state_dict

    return {f"unet.{k}": v.detach().float().cpu().clone() for k, v in get_peft_model_state_dict(unet, adapter_name=ADAPTER).items()}


def factors_from_state(state: dict[str, torch.Tensor] | None, names: list[str], scale: float, device) -> list:
    """ΔW = scale · B A of each named layer as factors (None before the first task)."""
    if state is None:
        return [None] * len(names)
    return [losses.lora_factors(state[f"unet.{n}.lora_A.weight"].float().to(device),
                                state[f"unet.{n}.lora_B.weight"].float().to(device), scale) for n in names]


@contextmanager
def trainable_token(text_encoder, token_ids: list[int], trainable: bool = True):
    """Serve the token's rows (one per vector) from their own (n × D) matrix while the block runs
    (yields it); on exit, even by an exception, the rows are written into the plain embedding,
    which returns."""
    embedding = text_encoder.get_input_embeddings()
    module = TrainableTokenEmbedding(embedding, token_ids)
    module.rows.requires_grad_(trainable)
    text_encoder.set_input_embeddings(module)
    try:
        yield module.rows
    finally:
        with torch.no_grad():
            embedding.weight[token_ids] = module.rows.to(embedding.weight.dtype)
        text_encoder.set_input_embeddings(embedding)


def load_pipe_style_tokens(pipe, embeddings: dict[str, list[torch.Tensor]]) -> None:
    """Earlier styles' tokens into every text encoder of `pipe` ({token: [its vectors per encoder]}),
    by stock diffusers' load_textual_inversion, as an export loads them."""
    family = bases.adapter(pipe)
    for token, vectors in embeddings.items():
        family.load_token(pipe, token, vectors)


# --- data -------------------------------------------------------------------------------


def default_caption(image_caption: str | None) -> str:
    return image_caption or "a picture"


def content_prompts(n: int, seed: int) -> list[str]:
    """n mini-world captions ("a red fish on the sea background, small, ..."), drawn from `seed` on a
    stream of their own (31), apart from the prompts bench/forgetting.py scores on (4242)."""
    rng = np.random.default_rng([seed, 31])
    return [miniworld.sample_attributes(rng).caption for _ in range(n)]


# --- the feature term's replay pool --------------------------------------------------------


def replay_prompts(sources: list[dict], k: int, tokenizer, gen: torch.Generator) -> tuple[list[str], list[int]]:
    """k replay prompts and the index of each one's source: each from a source drawn uniformly ({"token", "captions"}: an earlier style,
    or the base with token None), its captions taken in turn, the source's token appended. (Dealing
    the pool evenly over the sources instead left the 12-style stream's Forgetting where it was,
    0.17 against 0.18: notebook, sixteenth session.)"""
    choice = torch.randint(len(sources), (k,), generator=gen).tolist()
    texts = []
    for i, c in enumerate(choice):
        caps = sources[c]["captions"] or ["a picture"]
        texts.append(fit_prompt(tokenizer, caps[i % len(caps)], [sources[c]["token"]] if sources[c]["token"] else []))
    return texts, choice


def noised_style_replay(pipe, family, texts, means, stds, sched, gen, resolution, batch) -> tuple:
    """The replay pool: this task's style latents, noised at uniform t, under the replay prompts, with
    the model's output there, a batch at a time (the peak stays a training step's). Called under
    no_grad before the first update, when the model is exactly the pre-task model: its outputs are
    the teacher's. The constraint sits where this task moves the model. (The pre-task model's own
    sampling paths instead, generative distillation after Masip et al. 2023, forgot far more:
    notebook, chunk 7.)"""
    device, k = means.device, len(texts)
    idx = torch.randint(len(means), (k,), generator=gen)
    z0 = means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=gen).to(device)
    t = torch.randint(0, len(sched.alphas_cumprod), (k,), generator=gen).to(device)
    zt = sched.add_noise(z0, torch.randn(z0.shape, generator=gen).to(device), t)
    ids = family.tokenize(pipe, texts, device)
    cond, teacher = [], []
    for i in range(0, k, batch):
        cond.append(family.encode(pipe, [x[i : i + batch] for x in ids], resolution))
        teacher.append(family.unet(pipe.unet, zt[i : i + batch], t[i : i + batch], cond[-1]).float())
    return zt, t, {key: torch.cat([c[key] for c in cond]) for key in cond[0]}, torch.cat(teacher)


# --- the task -----------------------------------------------------------------------------


@dataclass
class TaskResult:
    steps: int
    final_loss: float
    loss_terms: dict
    seconds: float
    stopped: bool
    resumed_from: int


def learn_style(
    pipe,
    token: str,
    images: list,
    captions: list[str | None],
    cfg: MuseumConfig,
    previous_state: dict[str, torch.Tensor] | None,
    earlier_styles: list[dict],
    checkpoint_dir: Path | None = None,
    run: Run | None = None,
    init_words: tuple[str, ...] = (),
) -> tuple[dict[str, torch.Tensor], torch.Tensor, TaskResult]:
    """Train one style into `pipe` (already holding earlier styles' tokens, frozen).

    previous_state: the shared LoRA after the last task (None for the first): the starting point,
    and for the weight term the sum of every earlier task's update.
    earlier_styles: [{"token": ..., "captions": [...]}], one per earlier task, for the feature term's
    replay prompts.
    init_words: the words the token starts from when cfg.token_init is empty (the engine's
    captioning.style_words).
    Returns (LoRA state after this task, the token's vectors, result): (D,) for one vector, (n, D)
    for cfg.num_vectors = n; on a base with several text encoders (SDXL) the token has that per
    encoder and the second item is their list.
    run (generators/run.py): progress counts steps of cfg.steps; if should_stop() turns true the
    task writes its checkpoint and returns with result.stopped = True; every run.preview_every
    steps it samples PREVIEW_PROMPTS with the token (seeds of their own: the training RNG is
    untouched) and hands them to run.preview.
    """
    run = as_run(run)
    device = pipe.unet.device
    start = time.time()
    family = bases.adapter(pipe)  # what differs between SD 1.x/2.x and SDXL: the text side
    pairs = family.text_pairs(pipe)
    unet, tokenizer, vae = pipe.unet, pipe.tokenizer, pipe.vae
    resolution = int(unet.config.sample_size * pipe.vae_scale_factor)
    sched = noise_scheduler(pipe)
    alphas = sched.alphas_cumprod.to(device)
    v_prediction = sched.config.get("prediction_type", "epsilon") == "v_prediction"  # SD 2.x at 768 px
    n_train_t = len(alphas)

    # Data: cached latents, prompts carrying the token, and the set's statistics (z̄).
    means, stds = encode_images(vae, images, device, cfg.batch_size)
    set_stats = losses.latent_statistics(means).mean(0)

    # The shared LoRA continues from the previous task; the new token joins the vocabulary.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # the LoRA's initial A (first task) is reproducible
        attach_lora(unet, cfg, previous_state)
    # the token joins every encoder's vocabulary (SDXL textual inversion: one vector per encoder),
    # as cfg.num_vectors entries named as load_textual_inversion names a multi-vector embedding's
    names_of_token = token_vector_names(token, cfg.num_vectors)
    token_ids = [[add_style_token(tok, te, name, cfg.token_init or init_words) for name in names_of_token]
                 for tok, te in pairs]
    prompts = [fit_prompt(tokenizer, default_caption(c), [token]) for c in captions]
    unet.requires_grad_(False)
    for _, te in pairs:
        te.requires_grad_(False)
    layers = lora_layers(unet)
    names = sorted(layers)
    lora_params = [p for m in layers.values() for p in (m.lora_A[ADAPTER].weight, m.lora_B[ADAPTER].weight)]
    for p in lora_params:
        p.requires_grad_(True)
    mean_norms = [te.get_input_embeddings().weight[:ids[0]].detach().float().norm(dim=1).mean()
                  for (_, te), ids in zip(pairs, token_ids)]
    # earlier tokens' directions away from the vocabulary's mean (every vector of each), for the
    # token term (per encoder)
    earlier_ids = [tok.convert_tokens_to_ids(" ".join(expand_tokens(tok, [s["token"] for s in earlier_styles])).split())
                   for tok, _ in pairs]
    vocab_means = [te.get_input_embeddings().weight[:ids[0]].detach().float().mean(0) for (_, te), ids in zip(pairs, token_ids)]
    earlier_dirs = [F.normalize(te.get_input_embeddings().weight[ids].detach().float() - mu, dim=-1) if ids else None
                    for (_, te), ids, mu in zip(pairs, earlier_ids, vocab_means)]
    with ExitStack() as stack:
        vectors = [stack.enter_context(trainable_token(te, ids, cfg.train_token)) for (_, te), ids in zip(pairs, token_ids)]
        scale = cfg.alpha / cfg.rank
        before = factors_from_state(previous_state, names, scale, device)
        # the earlier tasks' updates summed: the shared LoRA as the last task left it (it starts at zero)
        earlier_updates = [before] if cfg.use_weight_reg and previous_state is not None else []

        gen = torch.Generator("cpu").manual_seed(cfg.seed)
        autocast = precision_autocast(device, cfg.precision)
        scaler = grad_scaler(device, cfg.precision)
        if cfg.gradient_checkpointing:
            unet.enable_gradient_checkpointing()

        # Replay pool for the feature term: earlier styles' prompts on noised style latents,
        # teacher outputs from the model as it is now, before any update. With preserve_base the
        # base counts as one more earlier style: this task's captions without any token (and
        # cfg.base_replay_prompts content prompts), so that the LoRA learns the style behind the
        # token instead of restyling every prompt.
        replay, replay_weight = None, None
        sources = list(earlier_styles)
        if cfg.preserve_base:
            plain = [default_caption(c) for c in captions] + content_prompts(cfg.base_replay_prompts, cfg.seed)
            sources.append({"token": None, "captions": plain})
        if cfg.use_feature_reg and sources:
            texts, source_of = replay_prompts(sources, cfg.replay_pool, tokenizer, gen)
            with torch.no_grad(), autocast:
                replay = noised_style_replay(pipe, family, texts, means, stds, sched, gen, resolution, cfg.batch_size)
            # the base's samples (token None) weighted apart from the earlier styles' (None: all 1)
            replay_weight = None if cfg.replay_base_weight == 1.0 else torch.tensor(
                [cfg.replay_base_weight if sources[c]["token"] is None else 1.0 for c in source_of], device=device)

        groups = [{"params": lora_params, "lr": cfg.lora_lr}]
        if cfg.train_token:
            groups.append({"params": vectors, "lr": cfg.token_lr, "weight_decay": 0.0})
        opt = torch.optim.AdamW(groups, weight_decay=0.0)

        step, resumed_from = 0, 0
        ckpt = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir else None
        if ckpt is not None and ckpt.exists():
            step = _load_checkpoint(ckpt, layers, vectors, opt, scaler, gen, cfg, len(earlier_styles))
            resumed_from = step

        ids_all = family.tokenize(pipe, prompts, device)
        terms = {}  # the latest value of each loss term (detached tensors until the task ends)
        loss = torch.zeros(())
        replay_batch = cfg.replay_batch or cfg.batch_size
        replay_every = max(1, math.ceil(replay_batch / (cfg.replay_share * cfg.batch_size)))
        stopped = False
        unet.train()
        while step < cfg.steps:
            if run.should_stop():
                stopped = True
                break
            idx = torch.randint(len(images), (cfg.batch_size,), generator=gen)
            z0 = means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=gen).to(device)
            noise = offset_noise(z0.shape, cfg.noise_offset, gen, device)
            t = torch.randint(0, n_train_t, (cfg.batch_size,), generator=gen).to(device)
            zt = sched.add_noise(z0, noise, t)
            replay_step = replay is not None and step % replay_every == 0
            if replay_step:
                r = torch.randint(replay[0].shape[0], (replay_batch,), generator=gen).to(device)
            with autocast:
                cond = family.encode(pipe, [x[idx.to(device)] for x in ids_all], resolution)
                pred = family.unet(unet, zt, t, cond).float()
            a_t = alphas[t][:, None, None, None]
            target = prediction_target(sched, z0, noise, t)
            loss = F.mse_loss(pred, target.float())
            terms["diff"] = loss.detach()
            if cfg.token_orthogonality and cfg.train_token and earlier_styles:
                lt = losses.token_overlap_loss(vectors, vocab_means, earlier_dirs)
                loss = loss + cfg.token_orthogonality * lt
                terms["token"] = lt.detach()
            if cfg.use_sdl:
                x0_hat = a_t.sqrt() * zt - (1 - a_t).sqrt() * pred if v_prediction else (zt - (1 - a_t).sqrt() * pred) / a_t.sqrt()
                sdl = losses.style_distillation_loss(x0_hat, set_stats, cfg.sdl_tau, alphas[t])
                loss = loss + cfg.lambda_sdl * sdl
                terms["sdl"] = sdl.detach()
            if cfg.use_weight_reg and earlier_updates:
                current = [losses.lora_factors(layers[n].lora_A[ADAPTER].weight, layers[n].lora_B[ADAPTER].weight, scale) for n in names]
                lw = losses.weight_direction_loss(current, before, earlier_updates, cfg.weight_reg_form)
                # ramped in over weight_reg_warmup steps: cos² is scale-free, so while the update
                # is still small its gradient (∝ 1/‖ΔW_t‖) would drown the diffusion loss
                ramp = min(1.0, (step + 1) / cfg.weight_reg_warmup) if cfg.weight_reg_warmup else 1.0
                loss = loss + cfg.lambda_w * ramp * lw
                terms["weight"] = lw.detach()
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if replay_step:
                # Its own forward and backward (gradients add up): peak activations stay those of
                # the style batch; weighted by replay_every so the term keeps its average weight.
                with autocast:
                    pred_replay = family.unet(unet, replay[0][r], replay[1][r],
                                              {key: v[r] for key, v in replay[2].items()}).float()
                lf = losses.feature_distillation_loss(pred_replay, replay[3][r], None if replay_weight is None else replay_weight[r])
                scaler.scale(cfg.lambda_f * replay_every * lf).backward()
                terms["feature"] = lf.detach()
                loss = loss.detach() + cfg.lambda_f * lf.detach()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(lora_params, 1.0)
            scaler.step(opt)
            scaler.update()
            if cfg.train_token:
                with torch.no_grad():
                    # each vector's norm; a tensor clamp, not `if norm > cap`: no host sync per step
                    for vector, mean_norm in zip(vectors, mean_norms):
                        vector.mul_((cfg.token_max_norm_ratio * mean_norm / vector.norm(dim=1, keepdim=True)).clamp(max=1.0))
            step += 1
            # the loss only every LOSS_EVERY steps: .item() waits for the device
            run.progress(step, cfg.steps, **({"loss": loss.item()} if step % LOSS_EVERY == 0 or step == cfg.steps else {}))
            if run.wants_preview(step) and step < cfg.steps:
                unet.eval()
                run.preview(step, *preview_images(pipe, token, cfg))
                unet.train()
            if ckpt is not None and (step % cfg.checkpoint_every == 0) and step < cfg.steps:
                _save_checkpoint(ckpt, layers, vectors, opt, scaler, gen, step, cfg, len(earlier_styles))
        unet.eval()
        if cfg.gradient_checkpointing:
            unet.disable_gradient_checkpointing()
        unet.requires_grad_(False)
        for vector in vectors:
            vector.requires_grad_(False)
        terms = {k: float(v) for k, v in terms.items()}
        result = TaskResult(step, loss.item(), terms, round(time.time() - start, 1), stopped, resumed_from)
        if stopped and ckpt is not None:
            _save_checkpoint(ckpt, layers, vectors, opt, scaler, gen, step, cfg, len(earlier_styles))
        # one vector: (D,), as a single-vector textual inversion file holds it; else (n, D)
        out = [v.detach().float().cpu().squeeze(0).clone() for v in vectors]
        return lora_state(unet), out[0] if len(out) == 1 else out, result


PREVIEW_PROMPTS = (
    "a red star on the grass background, medium, facing right, in the center",
    "a yellow house on the snow background, medium, facing right, in the center",
)


def preview_images(pipe, token: str, cfg: MuseumConfig) -> tuple[list, list[str]]:
    """(images, captions): PREVIEW_PROMPTS in the style, seeds 0, 1, ... (at most 20 sampling steps)."""
    size = diffusion.base_resolution(pipe)
    prompts = [style_prompt(p, [token]) for p in PREVIEW_PROMPTS]
    settings = [diffusion.GenerationSettings(prompt=p, seed=i, steps=min(cfg.sample_steps, 20), guidance=cfg.guidance,
                                             width=size, height=size) for i, p in enumerate(prompts)]
    return diffusion.generate(pipe, settings), prompts


def _save_checkpoint(path: Path, layers, vectors, opt, scaler, gen, step, cfg: MuseumConfig, after_tasks: int) -> None:
    """LoRA weights, the token, Adam moments, the fp16 loss scale, the data RNG and the step:
    an exact resume point.
    after_tasks: how many tasks the museum held when this task started (its starting point)."""
    tensors = {}
    for name, m in layers.items():
        tensors[f"lora.{name}.A"] = m.lora_A[ADAPTER].weight
        tensors[f"lora.{name}.B"] = m.lora_B[ADAPTER].weight
    for i, vector in enumerate(vectors):  # "token": the first encoder's ("token.1": SDXL's second)
        tensors["token" if i == 0 else f"token.{i}"] = vector
    tensors.update(optimizer_tensors(opt, _optimizer_labels(opt)))
    if scaler.is_enabled():
        tensors["scaler.scale"] = torch.tensor([scaler.get_scale()], dtype=torch.float64)
        tensors["scaler.growth_tracker"] = torch.tensor([scaler.state_dict()["_growth_tracker"]])
    tensors["rng"] = gen.get_state()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_tensors(tensors, path, metadata={"step": str(step), "config": json.dumps(cfg.to_dict()),
                                                 "after_tasks": str(after_tasks)})


def _optimizer_labels(opt) -> dict:
    """The checkpoint's names of the optimizer's parameters: opt.<group>.<position>."""
    return {f"opt.{gi}.{pi}": p for gi, group in enumerate(opt.param_groups) for pi, p in enumerate(group["params"])}


def _load_checkpoint(path: Path, layers, vectors, opt, scaler, gen, cfg: MuseumConfig, after_tasks: int) -> int:
    """The step to continue from: 0 (start over) when the museum has learnt other styles since the
    checkpoint was written, since its LoRA continued from a shared state that is no longer the last."""
    from safetensors import safe_open

    with safe_open(path, "pt") as fh:
        meta = fh.metadata()
    if meta.get("after_tasks") != str(after_tasks):
        return 0
    started = MuseumConfig.from_dict(json.loads(meta["config"]))  # fields added since take their defaults
    changed = [f.name for f in dataclasses.fields(cfg)
               if f.name not in MuseumConfig.RUN_FIELDS and getattr(started, f.name) != getattr(cfg, f.name)]
    if changed:  # ingest.task_config refuses this first, naming the field; a library caller lands here
        raise UserError(f"{path} was written with another training config ({', '.join(changed)} differ); "
                        f"delete {path.parent} to start the style over")
    tensors = load_file(path)
    with torch.no_grad():
        for name, m in layers.items():
            m.lora_A[ADAPTER].weight.copy_(tensors[f"lora.{name}.A"])
            m.lora_B[ADAPTER].weight.copy_(tensors[f"lora.{name}.B"])
        for i, vector in enumerate(vectors):
            vector.copy_(tensors["token" if i == 0 else f"token.{i}"])
    load_optimizer(opt, _optimizer_labels(opt), tensors)
    if scaler.is_enabled() and "scaler.scale" in tensors:
        scaler.load_state_dict({**scaler.state_dict(), "scale": float(tensors["scaler.scale"]),
                                "_growth_tracker": int(tensors["scaler.growth_tracker"])})
    gen.set_state(tensors["rng"])
    return int(meta["step"])
