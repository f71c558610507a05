"""One LoRA for all classes, conditioned on class, background and pose (BOB, docs/methods.md §3.2).

Every real image is trained with the prompt ``template(class words, category, background,
pose)`` built from its bank entry; with probability ``context_dropout`` the context-free
``plain_template`` is used instead, so that the model also answers ``--context none``.
``use_context=False`` trains the plain template only (the DataDream baseline).

Class names enter the prompt as **plain words** by default (``class_words="plain"``: the class
folder name, '_' '-' '.' '+' read as spaces): any base tokenizes them, nothing needs to be added
to a vocabulary, and the exported LoRA loads into stock diffusers with ``pipe.load_lora_weights``.
The class distinction is learnt by the LoRA on the UNet attention (to_q, to_k, to_v, to_out.0)
and, by default, on the text encoder attention (q_proj, k_proj, v_proj, out_proj) as in BOB (on
SDXL both text encoders, keys "text_encoder." and "text_encoder_2."; the prompt reaches the UNet
through the base family's adapter, generators/bases.py).
``class_words="learnt"`` instead gives every class its own new token ``<class-words>``, started
at the mean embedding of the class's plain words and trained with the LoRA (textual inversion
beside it); the vectors go to ``W/class_tokens.safetensors``. bench/synthetic.py measures both.
Attaching, saving and loading the LoRA and the class tokens: generators/synthetic/lora.py.

The front door, one policy for `studio synth fit` and the web app's Synthetic data tab
(`fit_config` decides, `fit` applies it):
- a fit in the work folder with the same training config resumes from its checkpoint (an
  interrupted fit) or returns at once (a finished one); nothing trained yet (a bank only) takes any
  training config, as long as the bank's fields (`FitConfig.BANK_FIELDS`) are unchanged;
- a changed training field is refused with a UserError naming the field, the old and the new value
  and the fix: start over (`fit(restart=True)`: the CLI's --restart, the web app's "Start over"),
  which discards the fit and its checkpoint and keeps the caption bank (extracted again only when a
  bank field changed);
- the run fields (`FitConfig.RUN_FIELDS`: checkpoint_every; previews live in the Run) may change on
  resume; checkpoint_every=0 (the default) checkpoints about four times a fit, at most 50 steps apart.

Work folder::

    W/fit_config.json                 FitConfig (what was asked; a rerun must match, but for RUN_FIELDS)
    W/bank.jsonl                      the caption bank (editable; edited => used)
    W/checkpoint.safetensors          resume point while training (removed at the end)
    W/pytorch_lora_weights.safetensors   the LoRA, diffusers keys ("unet.", "text_encoder.")
    W/class_tokens.safetensors        class_words="learnt" only: {token: vector} per class
                                      (SDXL: {"clip_l.<token>": ..., "clip_g.<token>": ...})
    W/fit.json                        result: steps, loss, lora_sha256, bank_sha256, classes
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from generators import bases
from generators.config import SavedConfig
from generators.diffusion_training import (
    LOSS_EVERY,
    TrainableTokenEmbedding,
    encode_images,
    noise_scheduler,
    prediction_target,
)
from generators.errors import UserError
from generators.files import CHECKPOINT_FILE, atomic_save_tensors, atomic_write_json, sha256_file
from generators.run import Run, as_run
from generators.synthetic import extract as ex
from generators.synthetic.checkpoint import load_checkpoint, save_checkpoint
from generators.synthetic.lora import (
    CLASS_TOKENS_FILE,
    add_class_tokens,
    attach,
    class_token,
    class_token_file,
    lora_state,
    text_encoder_prefixes,
)

CONFIG_FILE = "fit_config.json"
RESULT_FILE = "fit.json"
LORA_FILE = "pytorch_lora_weights.safetensors"
CLASS_WORDS = ("plain", "learnt")
TEMPLATE = "a {class} {category} on the {background} background, {pose}"
PLAIN_TEMPLATE = "a {class} {category}"
PREVIEW_CLASSES, PREVIEW_SEED, PREVIEW_STEPS, PREVIEW_GUIDANCE = 4, 0, 20, 2.0  # what fit's previews sample


@dataclass
class FitConfig(SavedConfig):
    # How a fit runs, not what it learns: these may change when it resumes (MuseumConfig.RUN_FIELDS).
    RUN_FIELDS: ClassVar[tuple[str, ...]] = ("checkpoint_every",)
    # What the caption bank depends on: starting over keeps the bank only when these are unchanged.
    BANK_FIELDS: ClassVar[tuple[str, ...]] = ("category", "base", "extractor", "captioner")

    category: str = "object"
    base: str | None = None  # None: the embedded default; else an embedded base's name, a resolved folder path or a hub id
    # LoRA (peft): rank = alpha as in BOB; UNet attention, optionally the text encoder attention.
    rank: int = 16
    alpha: float = 16.0
    target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    text_encoder_lora: bool = True
    text_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj")
    # Prompts.
    template: str = TEMPLATE
    plain_template: str = PLAIN_TEMPLATE
    use_context: bool = True  # False: DataDream (plain template only)
    context_dropout: float = 0.1
    class_words: str = "plain"  # "plain": folder names as words; "learnt": a trained token per class
    # Optimisation: AdamW, linear warmup then cosine decay.
    steps: int = 400
    batch_size: int = 8
    lr: float = 5e-4
    warmup_steps: int = 40
    checkpoint_every: int = 0  # 0: about four checkpoints a fit, at most 50 steps apart (checkpoint_interval)
    seed: int = 0
    extractor: str = "auto"
    captioner: str | None = None

    def validate(self) -> None:
        if not self.category.strip():
            raise UserError("--category must be a word, e.g. bird or aircraft")
        if self.steps < 1 or self.batch_size < 1 or self.rank < 1:
            raise UserError("--steps, --batch-size and --rank must be at least 1")
        if self.checkpoint_every < 0:
            raise UserError(f"checkpoint_every must be 0 (automatic) or more, got {self.checkpoint_every}")
        if self.class_words not in CLASS_WORDS:
            raise UserError(f"class_words must be one of {', '.join(CLASS_WORDS)}, got {self.class_words!r}")
        if not 0.0 <= self.context_dropout <= 1.0:
            raise UserError(f"context dropout must be in [0, 1], got {self.context_dropout}")
        for name, text, keys in (("template", self.template, ("{class}",)), ("plain template", self.plain_template, ("{class}",))):
            for key in keys:
                if key not in text:
                    raise UserError(f"the {name} {text!r} lacks {key}")


def checkpoint_interval(cfg: FitConfig) -> int:
    """Steps between checkpoints: cfg.checkpoint_every, or (0) about four a fit, at most 50 steps apart."""
    return cfg.checkpoint_every or max(1, min(50, cfg.steps // 4))


def fill(template: str, class_phrase: str, category: str, background: str = "", pose: str = "") -> str:
    out = (template.replace("{class}", class_phrase).replace("{category}", category)
           .replace("{background}", background).replace("{pose}", pose))
    return " ".join(out.split()).strip(" ,")


def class_phrase(cfg: FitConfig, class_name: str) -> str:
    """How the class enters the prompt: its plain words, or its learnt token."""
    return class_token(class_name) if cfg.class_words == "learnt" else ex.class_words(class_name)


def prompt_for(cfg: FitConfig, class_name: str, context: ex.Context | None) -> str:
    """The prompt for a class with a context (None: the context-free prompt)."""
    phrase = class_phrase(cfg, class_name)
    if context is None or not cfg.use_context:
        return fill(cfg.plain_template, phrase, cfg.category)
    return fill(cfg.template, phrase, cfg.category, context.background, context.pose)


def resolve_base(base: str | Path | None) -> str | None:
    """An embedded base's name (None: the default's, so that a fit keeps naming the base it was made
    on when the default changes), an absolute path for a local folder, else the hub id."""
    from generators import diffusion

    name = diffusion.base_name(base)
    if name in diffusion.EMBEDDED:
        return name
    path = Path(base)
    return str(path.resolve()) if path.exists() else str(base)


# --- the work folder -----------------------------------------------------------------------


@dataclass
class FitResult:
    steps: int
    final_loss: float
    seconds: float
    stopped: bool
    resumed_from: int
    lora_sha256: str = ""
    class_tokens_sha256: str = ""
    bank_sha256: str = ""
    bank_edited: bool = False
    classes: list[str] = field(default_factory=list)
    n_real: int = 0
    rejected: list = field(default_factory=list)
    config: FitConfig | None = None  # the config the fit ran with (fit_config's)


def load_fit(work: Path) -> dict:
    """fit.json of a finished fit (with 'config' as a FitConfig); FileNotFoundError if none."""
    work = Path(work)
    result = work / RESULT_FILE
    if not result.is_file() or not (work / LORA_FILE).is_file():
        raise FileNotFoundError(f"{work} holds no finished fit (no {RESULT_FILE}); run `studio synth fit DIR --work {work}` first")
    info = json.loads(result.read_text())
    info["config"] = FitConfig.from_dict(info["config"])
    return info


def _training(config: dict) -> dict:
    """A config's fields that decide what a fit learns (all but FitConfig.RUN_FIELDS)."""
    return {k: v for k, v in config.items() if k not in FitConfig.RUN_FIELDS}


def fit_state(work: Path) -> str | None:
    """What the work folder holds of a fit, as the refusals name it: 'was interrupted at step N',
    'holds a finished fit of N steps', or None (nothing trained: at most a caption bank)."""
    from safetensors import safe_open

    work = Path(work)
    if (work / CHECKPOINT_FILE).is_file():
        with safe_open(str(work / CHECKPOINT_FILE), "pt") as fh:
            return f"was interrupted at step {fh.metadata().get('step', '?')}"
    if (work / RESULT_FILE).is_file() and (work / LORA_FILE).is_file():
        return f"holds a finished fit of {json.loads((work / RESULT_FILE).read_text()).get('steps', '?')} steps"
    return None


def saved_config(work: Path) -> FitConfig | None:
    path = Path(work) / CONFIG_FILE
    return FitConfig.from_dict(json.loads(path.read_text())) if path.is_file() else None


def fit_config(work: Path, cfg: FitConfig, extract_only: bool = False) -> FitConfig:
    """The config a fit in `work` runs with, one policy for every front (the module docstring).
    Reads only. A fit in the folder (interrupted or finished) keeps its training config: a changed
    training field is refused by name; with nothing trained, only the bank's fields must match.
    Extracting only (extract_only) checks the bank's fields and keeps a fit's saved config."""
    work = Path(work)
    old = saved_config(work)
    if old is None:
        return cfg
    state = fit_state(work)
    keys = FitConfig.BANK_FIELDS if extract_only or state is None else tuple(_training(cfg.to_dict()))
    was, now = old.to_dict(), cfg.to_dict()
    changed = [k for k in keys if was.get(k) != now.get(k)]
    if changed:
        what = state or "holds a caption bank extracted"
        old_values = ", ".join(f"{k}={was.get(k)!r}" for k in changed)
        new_values = ", ".join(f"{k}={now.get(k)!r}" for k in changed)
        keep = "resume it" if "interrupted" in str(state) else "keep it" if state else "use that bank"
        bank = ("and extracts the caption bank again" if any(k in FitConfig.BANK_FIELDS for k in changed)
                else "and keeps the caption bank")
        raise UserError(f"{work} {what} with {old_values}; {new_values} is refused: give the same value to "
                        f"{keep}, or start over (`studio synth fit --restart`, or tick \"Start over\" in the web "
                        f"app), which discards the fit and its checkpoint {bank}")
    if extract_only and state is not None:
        return old  # extracting reads the bank; the fit and its settings stay
    return cfg


def discard_fit(work: Path, keep_bank: bool = True) -> None:
    """Start over: delete the work folder's fit, its checkpoint and saved config (and the caption bank
    unless kept). The fronts call it through fit(restart=True); the web app also when new data arrives."""
    names = [RESULT_FILE, LORA_FILE, CLASS_TOKENS_FILE, CHECKPOINT_FILE, CONFIG_FILE]
    if not keep_bank:
        names += [ex.BANK_FILE, ex.BANK_STAMP]
    for name in names:
        (Path(work) / name).unlink(missing_ok=True)


def prepare_bank(work: Path, data_dir: Path, cfg: FitConfig, classes, items, device: str = "cpu", log=print):
    """The bank for these images: reloaded from W/bank.jsonl if there (hand edits win), else extracted."""
    path = work / ex.BANK_FILE
    if path.is_file():
        entries = ex.load_bank(path, classes)
        edited = ex.bank_was_edited(path)
        by_file = {e.file for e in entries}
        missing = [it.file for it in items if it.file not in by_file]
        if missing:
            raise UserError(f"{path} has no line for {missing[0]} ({len(missing)} real images lack one); add lines or delete "
                            f"{path} to extract the bank again")
        if edited:
            log(f"using the edited caption bank {path}")
        return entries, edited
    extractors = ex.make_extractors(cfg.extractor, data_dir, cfg.captioner, device)
    entries = ex.build_bank(items, cfg.category, extractors)
    ex.save_bank(path, entries)
    return entries, False


def fit(data_dir: Path, work: Path, cfg: FitConfig, device: str = "auto", run: Run | None = None,
        extract_only: bool = False, restart: bool = False) -> FitResult:
    """Extract the bank (or reuse it) and train the LoRA; resumable from W/checkpoint.safetensors.

    The config it runs with is fit_config's (returned as result.config): a fit in `work` with other
    training settings is refused unless restart=True, which first discards it (discard_fit; the bank
    is kept unless one of FitConfig.BANK_FIELDS changed).

    A finished fit with the same settings and bank returns at once; if the bank was edited
    since, the LoRA is trained again on the edited prompts.

    run (generators/run.py): progress(step, cfg.steps, lr=..., loss=...) after every training
    step (the loss every LOSS_EVERY steps; a fit found finished reports cfg.steps at once);
    should_stop() is polled before every step and stops the fit with its checkpoint written, a
    result marked stopped that the next call resumes exactly. When run.wants_preview(step), on
    every step but the last, the fit samples one image per class (the first PREVIEW_CLASSES
    classes, context-free prompt, seed PREVIEW_SEED, PREVIEW_STEPS steps) and hands them to
    run.preview(step, images, captions); sampling leaves the training RNG and weights untouched.
    log(message): skipped images, the edited bank, a fit found finished.
    """
    from generators import diffusion

    cfg.validate()
    run = as_run(run)
    log = run.log
    data_dir, work = Path(data_dir), Path(work)
    if work.exists() and not work.is_dir():
        raise FileExistsError(f"--work {work} is a file; give a folder")
    if restart:
        old = saved_config(work)
        keep_bank = old is None or all(getattr(old, k) == getattr(cfg, k) for k in FitConfig.BANK_FIELDS)
        if fit_state(work) or (old is not None and not keep_bank):
            log(f"starting over: discarding the fit in {work}" + ("" if keep_bank else " and its caption bank"))
        discard_fit(work, keep_bank=keep_bank)
    cfg = fit_config(work, cfg, extract_only)
    start = time.time()
    resolution = diffusion.resolution_of(cfg.base)
    classes, items, rejected = ex.read_class_folders(data_dir, resolution)
    for name, reason in rejected:
        log(f"skipped {name}: {reason}")
    work.mkdir(parents=True, exist_ok=True)
    (work / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    entries, edited = prepare_bank(work, data_dir, cfg, classes, items, device, log)
    bank_hash = ex.bank_sha256(work / ex.BANK_FILE)
    result = FitResult(0, float("nan"), 0.0, False, 0, bank_sha256=bank_hash, bank_edited=edited, classes=classes,
                       n_real=len(items), rejected=rejected, config=cfg)
    if extract_only:
        return result
    done = work / RESULT_FILE
    if done.is_file() and (work / LORA_FILE).is_file():
        info = json.loads(done.read_text())
        if info.get("bank_sha256") == bank_hash and info.get("classes") == classes and info.get("files") == [i.file for i in items]:
            result.steps, result.final_loss = info["steps"], info["final_loss"]
            result.lora_sha256 = info["lora_sha256"]
            result.class_tokens_sha256 = info.get("class_tokens_sha256", "")
            log(f"{work} already holds this fit (LoRA sha256 {info['lora_sha256'][:12]}); nothing to do")
            run.progress(cfg.steps, cfg.steps)
            return result
        log("the bank or the images changed since the last fit; training the LoRA again")
        done.unlink()
        (work / CHECKPOINT_FILE).unlink(missing_ok=True)

    by_file = {e.file: e for e in entries}
    pipe = diffusion.load_base(cfg.base, device, "fp32")
    dev = pipe.unet.device
    contexts = [by_file[it.file].context for it in items]
    prompts_ctx = [prompt_for(cfg, it.class_name, c) for it, c in zip(items, contexts)]
    prompts_plain = [prompt_for(cfg, it.class_name, None) for it in items]

    means, stds = encode_images(pipe.vae, [it.image for it in items], dev)
    family = bases.adapter(pipe)  # SD 1.x/2.x or SDXL: how prompts reach the UNet
    resolution = int(pipe.unet.config.sample_size * pipe.vae_scale_factor)

    def ids(texts):
        return family.tokenize(pipe, texts, dev)

    named = attach(pipe, cfg)
    class_embeddings = []
    if cfg.class_words == "learnt":  # one trained row per class in every text encoder
        for (prefix, te), tok in zip(text_encoder_prefixes(pipe), family.tokenizers(pipe)):
            embedding = te.get_input_embeddings()
            module = TrainableTokenEmbedding(embedding, add_class_tokens(pipe, classes, tok, te))
            te.set_input_embeddings(module)
            module.rows.requires_grad_(True)
            named.append((f"{prefix}.class_token_rows", module.rows))
            class_embeddings.append((te, module))
    ids_ctx, ids_plain = ids(prompts_ctx), ids(prompts_plain)
    params = [p for _, p in named]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-2)
    noise_sched = noise_scheduler(pipe)
    n_train_t = len(noise_sched.alphas_cumprod)
    gen = torch.Generator("cpu").manual_seed(cfg.seed)

    step = 0
    ckpt = work / CHECKPOINT_FILE
    if ckpt.is_file():
        step = load_checkpoint(ckpt, named, opt, gen, lambda saved: _training(saved) == _training(cfg.to_dict()), bank_hash)
        log(f"resuming the interrupted fit at step {step} of {cfg.steps}")
    result.resumed_from = step
    every = checkpoint_interval(cfg)
    p_ctx = (1.0 - cfg.context_dropout) if cfg.use_context else 0.0
    pipe.unet.train()
    for te in family.text_encoders(pipe):
        te.train(cfg.text_encoder_lora)
    while step < cfg.steps:
        if run.should_stop():
            result.stopped = True
            break
        b = cfg.batch_size
        idx = torch.randint(len(items), (b,), generator=gen)
        z0 = means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=gen).to(dev)
        noise = torch.randn(z0.shape, generator=gen).to(dev)
        t = torch.randint(0, n_train_t, (b,), generator=gen).to(dev)
        use_ctx = (torch.rand(b, generator=gen) < p_ctx).to(dev)
        input_ids = [torch.where(use_ctx[:, None], c[idx.to(dev)], p[idx.to(dev)]) for c, p in zip(ids_ctx, ids_plain)]
        zt = noise_sched.add_noise(z0, noise, t)
        target = prediction_target(noise_sched, z0, noise, t)
        lr = _lr(cfg, step)
        for group in opt.param_groups:
            group["lr"] = lr
        pred = family.unet(pipe.unet, zt, t, family.encode(pipe, input_ids, resolution))
        loss = F.mse_loss(pred.float(), target.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        # the loss only every LOSS_EVERY steps: .item() waits for the device
        run.progress(step, cfg.steps, lr=lr, **({"loss": loss.item()} if step % LOSS_EVERY == 0 else {}))
        if step < cfg.steps and run.wants_preview(step):
            run.preview(step, *sample_previews(pipe, cfg, items, step))
        if step % every == 0 and step < cfg.steps:
            save_checkpoint(ckpt, named, opt, gen, step, cfg.to_dict(), bank_hash)
    pipe.unet.eval()
    for te in family.text_encoders(pipe):
        te.eval()
    result.steps = step
    result.final_loss = loss.item() if step > result.resumed_from else float("nan")
    result.seconds = round(time.time() - start, 1)
    if result.stopped:
        save_checkpoint(ckpt, named, opt, gen, step, cfg.to_dict(), bank_hash)
        return result
    if class_embeddings:
        tokens = class_token_file(family, [class_token(c) for c in classes],
                                  [m.rows.detach().float().cpu().clone() for _, m in class_embeddings])
        atomic_save_tensors(tokens, work / CLASS_TOKENS_FILE, metadata={"format": "pt"})
        result.class_tokens_sha256 = sha256_file(work / CLASS_TOKENS_FILE)
        for te, module in class_embeddings:
            te.set_input_embeddings(module.embedding)
    state = lora_state(pipe, cfg)
    lora_path = work / LORA_FILE
    # One metadata key only: safetensors writes metadata in hash order, and the file's sha256 must be
    # a function of the weights (what the LoRA is for lives in fit.json).
    atomic_save_tensors(state, lora_path, metadata={"format": "pt"})
    result.lora_sha256 = sha256_file(lora_path)
    info = {"steps": step, "final_loss": result.final_loss, "seconds": result.seconds, "lora_file": LORA_FILE,
            "lora_sha256": result.lora_sha256, "class_tokens_sha256": result.class_tokens_sha256, "bank_sha256": bank_hash, "bank_edited": edited, "classes": classes,
            "files": [it.file for it in items], "n_real": len(items), "data_dir": str(data_dir.resolve()),
            "resolution": resolution, "base": diffusion.base_name(cfg.base), "config": cfg.to_dict()}
    atomic_write_json(done, info)
    ckpt.unlink(missing_ok=True)
    return result


def sample_previews(pipe, cfg: FitConfig, items, step: int) -> tuple[list, list[str]]:
    """Preview images of the model being trained and their captions ("<class>, step <step>").

    Each image's noise comes from its own CPU generator (diffusion.generate); the models sample
    in eval mode and get their training modes back, and the global RNG state is restored, so a
    fit with previews trains exactly as one without."""
    from generators import diffusion

    names = sorted({it.class_name for it in items})[:PREVIEW_CLASSES]
    size = diffusion.base_resolution(pipe)
    settings = [diffusion.GenerationSettings(prompt=prompt_for(cfg, c, None), seed=PREVIEW_SEED, steps=PREVIEW_STEPS,
                                             guidance=PREVIEW_GUIDANCE, width=size, height=size) for c in names]
    models = [pipe.unet, *bases.adapter(pipe).text_encoders(pipe)]
    modes = [m.training for m in models]
    dev = pipe.unet.device
    cuda = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        for m in models:
            m.eval()
        try:
            images = diffusion.generate(pipe, settings)
        finally:
            for m, mode in zip(models, modes):
                m.train(mode)
    return images, [f"{c}, step {step}" for c in names]


def _lr(cfg: FitConfig, step: int) -> float:
    """Linear warmup from lr/warmup_steps, then cosine decay to 0 at cfg.steps. (Not diffusers'
    get_cosine_schedule_with_warmup: that warmup starts at 0, one step behind this one.)"""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span)))
