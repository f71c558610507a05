"""Sampling the fitted LoRA into an image-classification dataset (BOB's marginalized context, docs/methods.md §3.3).

The dataset's files and layout (``OUT/train/<class>/<index:06d>.png``, ``metadata.jsonl``,
``classes.json``, ``generation_config.json``, the card): generators/synthetic/dataset.py.

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
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from generators.errors import UserError
from generators.files import atomic_write_text, sha256_file
from generators.run import Run, as_run
from generators.synthetic import extract as ex
from generators.synthetic import fit as ft
from generators.synthetic.dataset import metadata_row, save_png, write_dataset_files, write_zip
from generators.synthetic.lora import CLASS_TOKENS_FILE, load_lora_into

CONTEXTS = ("bank", "same-class", "none")
MARKER = ".studio-export.json"


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


def load_pipeline(plan: Plan, device: str = "auto"):
    """The base with the fitted LoRA, loaded and fused as stock diffusers would."""
    from generators import diffusion

    pipe = diffusion.load_base(plan.fit_config.base, device, plan.cfg.precision)
    lora = plan.work / ft.LORA_FILE
    if sha256_file(lora) != plan.fit_info["lora_sha256"]:
        raise UserError(f"{lora} does not match the sha256 in {plan.work / ft.RESULT_FILE}; fit again")
    tokens = plan.work / CLASS_TOKENS_FILE
    if plan.fit_info.get("class_tokens_sha256") and sha256_file(tokens) != plan.fit_info["class_tokens_sha256"]:
        raise UserError(f"{tokens} does not match the sha256 in {plan.work / ft.RESULT_FILE}; fit again")
    return load_lora_into(pipe, lora)


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


def export(work: Path, out: Path, cfg: ExportConfig, device: str = "auto", run: Run | None = None,
           zip_archive: bool = False) -> ExportResult:
    """Write (or continue) the dataset in OUT; under accelerate, this process's share of it.

    run (generators/run.py): progress(images done, images of this process's batches) on the main
    process after every batch it samples, images already there counted as done (they are
    reported with the next sampled batch, or once at the end); should_stop() is polled before
    every batch to sample and leaves OUT resumable, the result marked stopped and not complete;
    log(message): the note on a bank edited after the fit.
    """
    from generators import diffusion

    run = as_run(run)
    out = Path(out)
    state = process_state(device)
    if state.num_processes > 1 and device in ("auto", "cuda"):
        device = "auto"  # each process on its own accelerator (PartialState().device), not all on cuda:0
    plan = plan_export(work, cfg)
    if state.is_main_process and plan.bank_sha256 != plan.fit_info.get("bank_sha256"):
        run.log(f"note: {Path(work) / ex.BANK_FILE} was edited after the fit; exporting with the edited contexts "
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
        done = reported = 0
        report = state.is_main_process and total > 0
        for b in mine:
            batch = plan.batches[b]
            paths = [out / "train" / j.file_name for j in batch]
            if all(p.is_file() for p in paths):
                result.skipped += len(batch)
                done += len(batch)
                continue
            if run.should_stop():
                result.stopped = True
                break
            if pipe is None:
                pipe = load_pipeline(plan, device)
            images = diffusion.generate(pipe, _settings(plan, batch, scheduler), batch_size=len(batch))
            for job, image, path in zip(batch, images, paths):
                if not path.is_file():
                    save_png(image, metadata_row(plan, job, scheduler), path)
                    result.written += 1
                else:
                    result.skipped += 1
            done += len(batch)
            if report:
                run.progress(done, total)
                reported = done
        if report and not result.stopped and reported < done:  # the tail was already there
            run.progress(done, total)
    state.wait_for_everyone()
    result.missing = [j.file_name for j in plan.jobs if not (out / "train" / j.file_name).is_file()]
    if result.missing:
        return result
    if state.is_main_process:
        write_dataset_files(plan, out, fp, scheduler)
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
    path = Path(diffusion.base_path(base))
    cfg_file = path / "scheduler" / "scheduler_config.json"
    if cfg_file.is_file():
        return json.loads(cfg_file.read_text()).get("_class_name", "")
    try:  # a hub id: its scheduler config only (no weights)
        from diffusers import DDPMScheduler

        return DDPMScheduler.load_config(str(base), subfolder="scheduler").get("_class_name", "")
    except (OSError, ValueError):
        return ""


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
