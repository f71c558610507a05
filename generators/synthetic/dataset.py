"""The files of an exported image-classification dataset (docs/methods.md §3.3, export layout).

Layout (``OUT``)::

    train/<class>/<index:06d>.png   the images (settings also in the PNG's text chunk "studio")
    train/metadata.jsonl            one row per image (datasets' imagefolder reads it)
    classes.json                    {"classes": [...], "class_to_idx": {...}}: sorted names, as ImageFolder
    generation_config.json          everything that determines the images
    README.md                       the dataset card

:func:`save_png` writes one image; :func:`write_dataset_files` writes the rest, from the plan
(generators/synthetic/export.py), once every image exists; :func:`write_zip` packs OUT
reproducibly. Every file is written to a hidden temporary name and renamed.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, PngImagePlugin

from generators.files import atomic_write_bytes, atomic_write_text, temporary_path
from generators.synthetic import fit as ft
from generators.synthetic.lora import CLASS_TOKENS_FILE

if TYPE_CHECKING:
    from generators.synthetic.export import Job, Plan

SEED_RULE = 'int.from_bytes(sha256(f"{purpose}|{seed}|{class_name}|{index}".encode()).digest()[:8], "big") & (2**63 - 1)'


def metadata_row(plan: Plan, job: Job, scheduler: str) -> dict:
    c = plan.cfg
    return {"file_name": job.file_name, "label": job.label, "class_name": job.class_name, "prompt": job.prompt,
            "negative_prompt": c.negative_prompt, "seed": job.seed, "index": job.index, "background": job.background,
            "pose": job.pose, "context": c.context, "context_source": job.context_source, "context_class": job.context_class,
            "base": plan.fit_info["base"], "lora_sha256": plan.fit_info["lora_sha256"], "scheduler": scheduler,
            "steps": c.steps, "guidance": float(c.guidance), "width": plan.width, "height": plan.height,
            "is_synthetic": True}


def save_png(image: Image.Image, row: dict, path: Path) -> None:
    """One image with its metadata row in the PNG text chunk "studio", written to a hidden temporary
    name (.name.tmp: an export's folders must list only its files) and renamed."""
    info = PngImagePlugin.PngInfo()
    info.add_text("studio", json.dumps(row, sort_keys=True))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    atomic_write_bytes(path, buf.getvalue(), hidden=True)


def _scheduler_config(plan: Plan) -> dict:
    from generators import diffusion

    base = plan.fit_config.base
    path = Path(diffusion.base_path(base))
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
        "class_tokens": ({"file": CLASS_TOKENS_FILE, "sha256": plan.fit_info["class_tokens_sha256"],
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


def write_dataset_files(plan: Plan, out: Path, fp: dict, scheduler: str) -> None:
    """metadata.jsonl, classes.json, generation_config.json and the card, all from the plan."""
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
