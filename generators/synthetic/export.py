"""Sampling the fitted LoRA into an image-classification dataset.

Layout (``OUT``)::

    train/<class>/<index:06d>.png   the images (settings also in the PNG's text chunk "studio")
    train/metadata.jsonl            one row per image (datasets' imagefolder reads it)
    classes.json                    {"classes": [...], "class_to_idx": {...}}: sorted names, as ImageFolder
    generation_config.json          everything that determines the images
    README.md                       the dataset card

Context (``ExportConfig.context``): ``bank`` draws each image's (background, pose)
uniformly from the whole bank, all classes together (BOB's marginalization);
``same-class`` only from the target class's own real images; ``none`` uses the
context-free prompt.

Determinism: image ``i`` of class ``c`` has seed ``derive_seed(S, c, i, "image")`` and
bank draw ``derive_seed(S, c, i, "context") % len(pool)``, with ``derive_seed`` the first 8
bytes of sha256("purpose|S|c|i") masked to 63 bits; its noise comes from its own CPU
generator. The unit of work is a fixed batch (images ``[k*B, (k+1)*B)`` of one class), so
an image's bytes do not depend on how many processes ran, on an interruption, or on
anything but (settings, seed, batch size, device kind); :func:`regenerate` recomputes any
one image.

Resume: every PNG is written to a hidden temporary file and renamed; a rerun skips batches
whose files all exist and regenerates the others. ``metadata.jsonl`` and the other files are
written by the main process once every image exists, from the plan (not from what the
processes report), so one process and many give identical files.

Many processes: ``accelerate launch --num_processes K -m studio synth export ...``; batches
are split with ``PartialState().split_between_processes``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, PngImagePlugin

from generators.errors import UserError
from generators.files import atomic_write_bytes, atomic_write_text, temporary_path
from generators.synthetic import extract as ex
from generators.synthetic import fit as ft

CONTEXTS = ("bank", "same-class", "none")
MARKER = ".studio-export.json"
SEED_RULE = 'int.from_bytes(sha256(f"{purpose}|{seed}|{class_name}|{index}".encode()).digest()[:8], "big") & (2**63 - 1)'


def derive_seed(seed: int, class_name: str, index: int, purpose: str = "image") -> int:
    digest = hashlib.sha256(f"{purpose}|{seed}|{class_name}|{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


@dataclass
class ExportConfig:
    per_class: int = 100
    seed: int = 0
    context: str = "bank"
    steps: int = 25
    guidance: float = 2.0
    negative_prompt: str = ""
    batch_size: int = 8
    size: int | None = None  # default: the base's resolution
    precision: str = "fp32"

    def validate(self) -> None:
        if self.context not in CONTEXTS:
            raise UserError(f"--context must be one of {', '.join(CONTEXTS)}, got {self.context!r}")
        if self.per_class < 1 or self.steps < 1 or self.batch_size < 1:
            raise UserError("--per-class, --steps and --batch-size must be at least 1")
        if self.size is not None and (self.size < 8 or self.size % 8):
            raise UserError(f"--size must be a positive multiple of 8, got {self.size}")


@dataclass(frozen=True)
class Job:
    label: int
    class_name: str
    index: int
    file_name: str  # relative to OUT/train
    seed: int
    prompt: str
    background: str
    pose: str
    context_source: str  # the real image whose context was drawn ("" for none)
    context_class: str


@dataclass
class Plan:
    work: Path
    classes: list[str]
    jobs: list[Job]
    batches: list[list[Job]]
    fit_info: dict
    fit_config: ft.FitConfig
    cfg: ExportConfig
    width: int
    height: int
    bank: list[ex.BankEntry]
    bank_sha256: str


def plan_export(work: Path, cfg: ExportConfig) -> Plan:
    """Every image's class, seed, context and prompt, without loading any model."""
    cfg.validate()
    from generators import diffusion

    work = Path(work)
    info = ft.load_fit(work)
    fcfg: ft.FitConfig = info["config"]
    classes = list(info["classes"])
    bank_path = work / ex.BANK_FILE
    bank = ex.load_bank(bank_path, classes)
    by_class = {c: [e for e in bank if e.class_name == c] for c in classes}
    if cfg.context == "same-class":
        empty = [c for c, v in by_class.items() if not v]
        if empty:
            raise UserError(f"--context same-class: class {empty[0]!r} has no line in {bank_path}; add one or use --context bank")
    jobs, batches = [], []
    for label, c in enumerate(classes):
        pool = bank if cfg.context == "bank" else by_class[c] if cfg.context == "same-class" else []
        class_jobs = []
        for i in range(cfg.per_class):
            entry = pool[derive_seed(cfg.seed, c, i, "context") % len(pool)] if pool else None
            prompt = ft.prompt_for(fcfg, c, entry.context if entry else None)
            class_jobs.append(Job(label, c, i, f"{c}/{i:06d}.png", derive_seed(cfg.seed, c, i, "image"), prompt,
                                  entry.background if entry else "", entry.pose if entry else "",
                                  entry.file if entry else "", entry.class_name if entry else ""))
        jobs.extend(class_jobs)
        batches.extend(class_jobs[k:k + cfg.batch_size] for k in range(0, len(class_jobs), cfg.batch_size))
    size = cfg.size or int(info.get("resolution") or diffusion.resolution_of(fcfg.base))
    return Plan(work, classes, jobs, batches, info, fcfg, cfg, size, size, bank, ex.bank_sha256(bank_path))


def fingerprint(plan: Plan, device_type: str) -> dict:
    """What determines the images' bytes: a rerun into the same OUT must match it."""
    c = plan.cfg
    return {"lora_sha256": plan.fit_info["lora_sha256"], "bank_sha256": plan.bank_sha256,
            "base": plan.fit_info["base"], "classes": plan.classes, "per_class": c.per_class, "seed": c.seed,
            "context": c.context, "steps": c.steps, "guidance": float(c.guidance), "negative_prompt": c.negative_prompt,
            "batch_size": c.batch_size, "width": plan.width, "height": plan.height, "precision": c.precision,
            "device_type": device_type,
            # Learnt class tokens only (so a plain fit's fingerprint is what it always was).
            **({"class_tokens_sha256": plan.fit_info["class_tokens_sha256"]} if plan.fit_info.get("class_tokens_sha256") else {})}


def metadata_row(plan: Plan, job: Job, scheduler: str) -> dict:
    c = plan.cfg
    return {"file_name": job.file_name, "label": job.label, "class_name": job.class_name, "prompt": job.prompt,
            "negative_prompt": c.negative_prompt, "seed": job.seed, "index": job.index, "background": job.background,
            "pose": job.pose, "context": c.context, "context_source": job.context_source, "context_class": job.context_class,
            "base": plan.fit_info["base"], "lora_sha256": plan.fit_info["lora_sha256"], "scheduler": scheduler,
            "steps": c.steps, "guidance": float(c.guidance), "width": plan.width, "height": plan.height,
            "is_synthetic": True}


@dataclass
class ExportResult:
    out: Path
    total: int
    written: int = 0  # by this process
    skipped: int = 0  # by this process (already there)
    stopped: bool = False
    complete: bool = False
    zip_path: Path | None = None
    num_processes: int = 1
    missing: list[str] = field(default_factory=list)


def _check_out(out: Path, fp: dict) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; choose a folder")
    for name in (MARKER, "generation_config.json"):
        path = out / name
        if path.is_file():
            old = json.loads(path.read_text())
            old = old.get("fingerprint", old)
            if old != fp:
                diff = sorted(k for k in set(old) | set(fp) if old.get(k) != fp.get(k))
                raise FileExistsError(f"{out} holds an export with other settings ({', '.join(diff)}); choose a new --out "
                                      "or rerun with the same settings to continue it")
            return
    if any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not an empty folder; choose a new --out")


# Temporary names are hidden (.name.tmp): an export's folders must list only its files.


def _save_png(image: Image.Image, row: dict, path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("studio", json.dumps(row, sort_keys=True))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    atomic_write_bytes(path, buf.getvalue(), hidden=True)


def load_pipeline(plan: Plan, device: str = "auto"):
    """The base with the fitted LoRA, loaded and fused as stock diffusers would."""
    from generators import diffusion

    pipe = diffusion.load_base(plan.fit_config.base, device, plan.cfg.precision)
    lora = plan.work / ft.LORA_FILE
    if ft.sha256_file(lora) != plan.fit_info["lora_sha256"]:
        raise UserError(f"{lora} does not match the sha256 in {plan.work / ft.RESULT_FILE}; fit again")
    tokens = plan.work / ft.CLASS_TOKENS_FILE
    if plan.fit_info.get("class_tokens_sha256") and ft.sha256_file(tokens) != plan.fit_info["class_tokens_sha256"]:
        raise UserError(f"{tokens} does not match the sha256 in {plan.work / ft.RESULT_FILE}; fit again")
    return ft.load_lora_into(pipe, lora)


def _settings(plan: Plan, batch: list[Job], scheduler: str):
    from generators import diffusion

    c = plan.cfg
    return [diffusion.GenerationSettings(prompt=j.prompt, negative_prompt=c.negative_prompt, seed=j.seed, steps=c.steps,
                                         guidance=c.guidance, width=plan.width, height=plan.height,
                                         base=plan.fit_info["base"], scheduler=scheduler) for j in batch]


def process_state(device: str = "auto"):
    """accelerate's PartialState, on the CPU when asked or when there is no GPU (gloo between processes).

    Created before anything else touches PartialState: its settings are fixed by the first call.
    Under `accelerate launch --multi_gpu --num_processes K` (torch.distributed.run) on a CPU-only
    machine, or with --device cpu, the K processes form a MULTI_CPU group.
    """
    import torch
    from accelerate import PartialState

    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1  # only then does the flag matter; a plain process
    cpu = launched and (device == "cpu" or not torch.cuda.is_available())  # keeps the default state for others
    return PartialState(cpu=cpu)


def export(work: Path, out: Path, cfg: ExportConfig, device: str = "auto", progress=None, should_stop=None,
           zip_archive: bool = False, log=print) -> ExportResult:
    """Write (or continue) the dataset in OUT; under accelerate, this process's share of it."""
    from generators import diffusion

    should_stop = should_stop or (lambda: False)
    out = Path(out)
    state = process_state(device)
    if state.num_processes > 1 and device in ("auto", "cuda"):
        device = "auto"  # each process on its own accelerator (PartialState().device), not all on cuda:0
    plan = plan_export(work, cfg)
    if state.is_main_process and plan.bank_sha256 != plan.fit_info.get("bank_sha256"):
        log(f"note: {Path(work) / ex.BANK_FILE} was edited after the fit; exporting with the edited contexts "
            "(run `studio synth fit` again to train on them too)")
    device_type = diffusion.resolve_device(device).type
    fp = fingerprint(plan, device_type)
    _check_out(out, fp)  # every process, before anyone writes
    state.wait_for_everyone()
    if state.is_main_process:
        (out / "train").mkdir(parents=True, exist_ok=True)
        if not (out / "generation_config.json").is_file():
            atomic_write_text(out / MARKER, json.dumps(fp, indent=2) + "\n", hidden=True)
        for c in plan.classes:
            (out / "train" / c).mkdir(exist_ok=True)
            for stale in (out / "train" / c).glob(".*.tmp"):
                stale.unlink()
    state.wait_for_everyone()
    result = ExportResult(out, len(plan.jobs), num_processes=state.num_processes)

    pipe, scheduler = None, _scheduler_name(plan)
    with state.split_between_processes(list(range(len(plan.batches)))) as mine:
        mine = list(mine)
        total = sum(len(plan.batches[b]) for b in mine)
        done = 0
        for b in mine:
            batch = plan.batches[b]
            paths = [out / "train" / j.file_name for j in batch]
            if all(p.is_file() for p in paths):
                result.skipped += len(batch)
                done += len(batch)
                continue
            if should_stop():
                result.stopped = True
                break
            if pipe is None:
                pipe = load_pipeline(plan, device)
            images = diffusion.generate(pipe, _settings(plan, batch, scheduler), batch_size=len(batch))
            for job, image, path in zip(batch, images, paths):
                if not path.is_file():
                    _save_png(image, metadata_row(plan, job, scheduler), path)
                    result.written += 1
                else:
                    result.skipped += 1
            done += len(batch)
            if progress and state.is_main_process:
                progress(done, total)
    state.wait_for_everyone()
    result.missing = [j.file_name for j in plan.jobs if not (out / "train" / j.file_name).is_file()]
    if result.missing:
        return result
    if state.is_main_process:
        _finish(plan, out, fp, scheduler)
        if zip_archive:
            result.zip_path = write_zip(out)
        (out / MARKER).unlink(missing_ok=True)
    state.wait_for_everyone()
    result.complete = True
    if zip_archive:
        result.zip_path = out.with_name(out.name + ".zip")
    return result


def _scheduler_name(plan: Plan) -> str:
    from generators import diffusion

    base = plan.fit_config.base
    path = diffusion.DEFAULT_BASE if base is None else Path(base)
    cfg_file = path / "scheduler" / "scheduler_config.json"
    if cfg_file.is_file():
        return json.loads(cfg_file.read_text()).get("_class_name", "")
    try:  # a hub id: its scheduler config only (no weights)
        from diffusers import DDPMScheduler

        return DDPMScheduler.load_config(str(base), subfolder="scheduler").get("_class_name", "")
    except (OSError, ValueError):
        return ""


def _scheduler_config(plan: Plan) -> dict:
    from generators import diffusion

    base = plan.fit_config.base
    path = diffusion.DEFAULT_BASE if base is None else Path(base)
    cfg_file = path / "scheduler" / "scheduler_config.json"
    if cfg_file.is_file():
        return {k: v for k, v in json.loads(cfg_file.read_text()).items() if k != "_diffusers_version"}
    return {}


def generation_config(plan: Plan, fp: dict, scheduler: str) -> dict:
    fc = plan.fit_config
    return {
        "fingerprint": fp,
        "category": fc.category,
        "classes": plan.classes,
        "n_images": len(plan.jobs),
        "template": fc.template,
        "plain_template": fc.plain_template,
        "class_words": {c: ft.class_phrase(plan.fit_config, c) for c in plan.classes},
        "context": plan.cfg.context,
        "bank_size": len(plan.bank),
        "seed_rule": SEED_RULE,
        "image_seed_purpose": "image",
        "context_draw_rule": "pool[derive_seed(seed, class_name, index, 'context') % len(pool)], pool = bank (all classes) | "
                             "the class's bank lines | none",
        "batches": "per class, images [k*batch_size, (k+1)*batch_size); noise per image from torch.Generator('cpu').manual_seed(seed)",
        "sampler": scheduler,
        "scheduler_config": _scheduler_config(plan),
        "lora": {"file": ft.LORA_FILE, "sha256": plan.fit_info["lora_sha256"], "rank": fc.rank, "alpha": fc.alpha,
                 "text_encoder": fc.text_encoder_lora, "fit_steps": plan.fit_info["steps"], "fused": True},
        "class_tokens": ({"file": ft.CLASS_TOKENS_FILE, "sha256": plan.fit_info["class_tokens_sha256"],
                          "load": _class_tokens_load(fc.base)}
                         if plan.fit_info.get("class_tokens_sha256") else None),
        "fit": {"n_real": plan.fit_info["n_real"], "use_context": fc.use_context, "context_dropout": fc.context_dropout,
                "extractor": fc.extractor, "captioner": fc.captioner},
        "work": str(Path(plan.work).resolve()),
    }


def _class_tokens_load(base) -> str:
    """How stock diffusers loads the fit's class tokens on this base's family."""
    from generators.bases import family_of

    try:
        family = family_of(base)
    except (OSError, ValueError):
        family = None
    if family == "sdxl":  # one vector per text encoder: keys clip_l.<token> and clip_g.<token>
        return ("for key, te, tok in (('clip_l', pipe.text_encoder, pipe.tokenizer), ('clip_g', pipe.text_encoder_2, "
                "pipe.tokenizer_2)): pipe.load_textual_inversion([vectors[f'{key}.{t}'] for t in tokens], token=tokens, "
                "text_encoder=te, tokenizer=tok)")
    return "pipe.load_textual_inversion([vectors[t] for t in tokens], token=tokens)"


def _finish(plan: Plan, out: Path, fp: dict, scheduler: str) -> None:
    rows = [metadata_row(plan, j, scheduler) for j in plan.jobs]
    atomic_write_text(out / "train" / "metadata.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), hidden=True)
    classes = {"classes": plan.classes, "class_to_idx": {c: i for i, c in enumerate(plan.classes)},
               "class_words": {c: ft.class_phrase(plan.fit_config, c) for c in plan.classes}}
    atomic_write_text(out / "classes.json", json.dumps(classes, indent=2) + "\n", hidden=True)
    atomic_write_text(out / "generation_config.json", json.dumps(generation_config(plan, fp, scheduler), indent=2) + "\n", hidden=True)
    atomic_write_text(out / "README.md", dataset_card(plan, scheduler), hidden=True)


def dataset_card(plan: Plan, scheduler: str) -> str:
    c, fc, n = plan.cfg, plan.fit_config, len(plan.jobs)
    size_cat = "n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K" if n < 100_000 else "100K<n<1M"
    context_text = {
        "bank": "each image's (background, pose) drawn uniformly from the whole caption bank, all classes together "
                "(BOB's marginalization of the context)",
        "same-class": "each image's (background, pose) drawn from its own class's real images only",
        "none": "no context: the class prompt alone",
    }[c.context]
    example = plan.jobs[0]
    lines = [
        "---",
        "task_categories:",
        "- image-classification",
        "tags:",
        "- synthetic",
        "- studio",
        f"size_categories:\n- {size_cat}",
        f"pretty_name: synthetic {fc.category} ({len(plan.classes)} classes)",
        "---",
        "",
        f"# Synthetic {fc.category} images, {len(plan.classes)} classes × {c.per_class}",
        "",
        f"Made by Studio (`studio synth`) from {plan.fit_info['n_real']} real images: one LoRA fitted on all classes "
        f"of the base `{plan.fit_info['base']}` (sha256 `{plan.fit_info['lora_sha256'][:16]}…`), prompts "
        f"`{fc.template}`; {context_text}. Every image is synthetic (`is_synthetic`).",
        "",
        f"Classes (label = index): {', '.join(f'{i} {cl}' for i, cl in enumerate(plan.classes))}.",
        "",
        f"Sampling: {scheduler}, {c.steps} steps, guidance {c.guidance}, {plan.width}×{plan.height}, "
        f"seed {c.seed}, batches of {c.batch_size}. Example prompt: “{example.prompt}”.",
        "",
        "## Files",
        "",
        "- `train/<class>/<index>.png`: the images (their settings also in the PNG text chunk `studio`)",
        "- `train/metadata.jsonl`: file_name, label, class_name, prompt, negative_prompt, seed, index, background, pose, "
        "context, context_source (the real image whose context was used), context_class, base, lora_sha256, scheduler, "
        "steps, guidance, width, height, is_synthetic",
        "- `classes.json`: class names in label order (sorted, as torchvision's ImageFolder numbers them)",
        "- `generation_config.json`: every setting, the seed rule and the hashes",
        "",
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        "ds = load_dataset('imagefolder', data_dir='path/to/this/folder', split='train')  # image, label, prompt, ...",
        "# or torchvision: torchvision.datasets.ImageFolder('path/to/this/folder/train')  (labels as in classes.json)",
        "```",
        "",
        "## Regenerating one image",
        "",
        "Image `index` of class `c` has seed "
        "`int.from_bytes(sha256(f'image|{seed}|{c}|{index}'.encode()).digest()[:8], 'big') & (2**63 - 1)` and its noise "
        "from `torch.Generator('cpu').manual_seed(seed)`; `generators.synthetic.regenerate(OUT, file_name)` recomputes "
        "it bit for bit on the same kind of device (it reruns the image's batch).",
        "",
        "## Limitations",
        "",
        "Synthetic images carry the base model's biases and errors; the class is only as right as the fitted LoRA. "
        "Train with real images mixed in and select models on held-out real images.",
        "",
    ]
    return "\n".join(lines)


def write_zip(out: Path) -> Path:
    """OUT.zip beside OUT: sorted entries, fixed timestamps (the same export gives the same bytes)."""
    out = Path(out)
    target = out.with_name(out.name + ".zip")
    tmp = temporary_path(target, hidden=True)  # streamed (a set can be larger than memory), then renamed
    files = sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))
    with zipfile.ZipFile(tmp, "w") as zf:
        for path in files:
            info = zipfile.ZipInfo(f"{out.name}/{path.relative_to(out).as_posix()}", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED if path.suffix == ".png" else zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())
    tmp.replace(target)
    return target


def regenerate(out: Path, file_name: str, work: Path | None = None, device: str = "cpu") -> Image.Image:
    """Recompute one exported image (file_name as in metadata.jsonl, e.g. 'robin/000003.png')."""
    from generators import diffusion

    out = Path(out)
    gc_path = out / "generation_config.json"
    if not gc_path.is_file():
        raise FileNotFoundError(f"{gc_path} missing; {out} is not a finished `studio synth export`")
    gc = json.loads(gc_path.read_text())
    fp = gc["fingerprint"]
    cfg = ExportConfig(per_class=fp["per_class"], seed=fp["seed"], context=fp["context"], steps=fp["steps"],
                       guidance=fp["guidance"], negative_prompt=fp["negative_prompt"], batch_size=fp["batch_size"],
                       size=fp["width"], precision=fp["precision"])
    plan = plan_export(Path(work or gc["work"]), cfg)
    if plan.fit_info["lora_sha256"] != fp["lora_sha256"] or plan.bank_sha256 != fp["bank_sha256"]:
        raise UserError(f"the work folder's LoRA or bank differs from the one {out} was made with; pass the original --work")
    for batch in plan.batches:
        for k, job in enumerate(batch):
            if job.file_name == file_name:
                pipe = load_pipeline(plan, device)
                return diffusion.generate(pipe, _settings(plan, batch, _scheduler_name(plan)), batch_size=len(batch))[k]
    raise UserError(f"{file_name!r} is not an image of {out} (expected '<class>/<index:06d>.png')")

