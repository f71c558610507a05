"""The Synthetic data tab: upload classes, extract (and edit) the caption bank, fine-tune one LoRA for
all classes, preview and export a data set."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from generators.synthetic.export import ExportConfig
from generators.synthetic.extract import BANK_FILE
from generators.synthetic.fit import RESULT_FILE, FitConfig
from studio.jobs import Job
from studio.webapp.shared import (CAPTION_SUFFIXES, HEAVY, IMAGE_SUFFIXES, LIGHT, NAME, StudioBase, UserError,
                                  _bind_stop, _owner, _registrar, _status_md, page_errors)
from studio.webapp.uploads import check_uploads, safe_extract_zip

if TYPE_CHECKING:
    from studio.webapp.app import Studio

DEFAULT_CATEGORY = "bird"  # a word in the embedded base's vocabulary (Studio.category_note checks others)

BANK_COLUMNS = ["file", "class", "background", "pose", "source"]


# the forms start at the engines' defaults
FIT, EXPORT = FitConfig(), ExportConfig()

class SyntheticMixin(StudioBase):
    """The Synthetic data tab's events."""

    def synth_dirs(self, set_name: str) -> tuple[Path, Path]:
        name = str(set_name or "").strip()
        if not NAME.match(name):
            raise UserError(f"data set name {name!r}: 1-48 lowercase letters, digits, '_' or '-'")
        root = self.home / "synthetic" / name
        return root / "data", root / "work"

    def synth_classes_md(self, set_name) -> str:
        try:
            data, work = self.synth_dirs(set_name)
        except UserError as err:
            return str(err)
        if not data.is_dir() or not any(data.iterdir()):
            return "No classes yet: upload a zip of class folders, or add classes one by one."
        parts = []
        for d in sorted(p for p in data.iterdir() if p.is_dir()):
            n = sum(1 for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            parts.append(f"{html.escape(d.name)} ({n})")
        state = "fitted" if (work / RESULT_FILE).is_file() else "attributes extracted" if (work / BANK_FILE).is_file() else "new"
        return f"**{len(parts)} classes** ({state}): " + ", ".join(parts)

    def synth_upload(self, set_name, zip_file, class_name, class_files):
        """Add class folders from a zip and/or one class from uploaded images (+ .txt sidecars)."""
        from generators.synthetic import extract as ex
        from generators.synthetic.fit import discard_fit

        with page_errors():
            data, work = self.synth_dirs(set_name)
            added = []
            if zip_file:
                check_uploads([zip_file], (".zip",), 1, "zip files")
                staging = data.parent / "unpack"
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir(parents=True)
                safe_extract_zip(Path(zip_file), staging, IMAGE_SUFFIXES + CAPTION_SUFFIXES)
                root = staging
                subdirs = [p for p in root.iterdir() if p.is_dir()]
                if len(subdirs) == 1 and not any(p.is_file() for p in root.iterdir()) and \
                        all(p.is_dir() for p in subdirs[0].iterdir()):
                    root = subdirs[0]  # the zip of one folder holding the class folders
                classes = [p for p in root.iterdir() if p.is_dir()]
                if not classes:
                    raise UserError("the zip holds no class folders (zip DIR with DIR/<class>/<image> inside)")
                for c in classes:
                    if not ex.CLASS_NAME.match(c.name):
                        raise UserError(f"class folder name {c.name!r}: letters, digits, space, '_', '-', '.', '+'")
                    data.mkdir(parents=True, exist_ok=True)
                    shutil.rmtree(data / c.name, ignore_errors=True)
                    shutil.move(str(c), str(data / c.name))
                    added.append(c.name)
                shutil.rmtree(staging, ignore_errors=True)
            if class_files:
                cname = str(class_name or "").strip()
                if not ex.CLASS_NAME.match(cname):
                    raise UserError("name the class (letters, digits, space, '_', '-', '.', '+'; at most 64 characters)")
                uploads = check_uploads(class_files, IMAGE_SUFFIXES + CAPTION_SUFFIXES, 200, "class files")
                target = data / cname
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir(parents=True)
                for src, safe in uploads:
                    shutil.copyfile(src, target / safe)
                added.append(cname)
            if not added:
                raise UserError("upload a zip of class folders, or name a class and upload its images")
            discard_fit(work, keep_bank=False)  # new data: the bank and the fit were of other images
        return self.synth_classes_md(set_name)

    def tokenizer(self):
        """The base's tokenizer for checking words (None for a hub base: nothing is downloaded for a check)."""
        if getattr(self, "_tokenizer", None) is None:
            from generators import diffusion

            folder = Path(diffusion.base_path(self.base)) / "tokenizer"
            self._tokenizer = False
            if folder.is_dir():
                try:
                    from transformers import CLIPTokenizer

                    self._tokenizer = CLIPTokenizer.from_pretrained(str(folder))
                except Exception:  # noqa: BLE001 - no check rather than no app
                    self._tokenizer = False
        return self._tokenizer or None

    def unknown_words(self, text: str) -> list[str]:
        """The words of `text` the base's tokenizer does not hold whole (it splits them into pieces)."""
        tok = self.tokenizer()
        if tok is None:
            return []
        vocab = tok.get_vocab()
        return [w for w in re.findall(r"[A-Za-z]+", str(text or "").lower()) if f"{w}</w>" not in vocab]

    def category_note(self, category) -> str:
        unknown = self.unknown_words(category)
        if not unknown:
            return ""
        pieces = " · ".join(t.replace("</w>", "") for t in self.tokenizer().tokenize(unknown[0]))
        return (f"⚠ The base does not know the word **{html.escape(unknown[0])}**: its tokenizer reads it as pieces "
                f"({html.escape(pieces)}), so prompts carry no meaning for it. Pick a word the base knows "
                f"(e.g. {DEFAULT_CATEGORY}) unless you train it on that word.")

    def _fit_config(self, category, steps=FIT.steps, batch_size=FIT.batch_size, class_words=FIT.class_words,
                    use_context=FIT.use_context):
        from generators.synthetic.fit import FitConfig, resolve_base

        category = str(category or "").strip()
        if not re.fullmatch(r"[A-Za-z][A-Za-z -]{0,31}", category):
            raise UserError("the category is a word or two (letters), e.g. bird")
        steps, batch_size = int(steps), int(batch_size)
        if not (1 <= steps <= 100_000 and 1 <= batch_size <= 64):
            raise UserError("steps must be 1-100000 and batch size 1-64")
        cfg = FitConfig(category=category, base=resolve_base(self.base), steps=steps, batch_size=batch_size,
                        class_words=class_words, use_context=bool(use_context))
        cfg.validate()  # e.g. an unknown class_words, as a one-line error
        return cfg

    def bank_rows(self, work: Path) -> list[list]:
        from generators.synthetic import extract as ex

        if not (work / ex.BANK_FILE).is_file():
            return []
        return [[e.file, e.class_name, e.background, e.pose, e.source] for e in ex.load_bank(work / ex.BANK_FILE)]

    def synth_extract(self, set_name, category, restart=False, request: gr.Request | None = None):
        """Extract (background, pose) per real image: the editable caption bank. A fit in the work folder
        is kept (a changed category is refused, as the engine's fit_config says) unless `restart`."""
        with page_errors():
            data, work = self.synth_dirs(set_name)
            if not data.is_dir():
                raise UserError("upload the class images first")
            cfg = self._fit_config(category)

        def run(job: Job):
            from generators.run import Run
            from generators.synthetic.fit import fit

            result = fit(data, work, cfg, self.device, Run(log=job.log), extract_only=True, restart=bool(restart))
            job.log(f"{result.n_real} images in {len(result.classes)} classes; {len(result.rejected)} rejected")
            return self.bank_rows(work)

        rows = self.run_sync("synthetic", f"extract attributes of {set_name}", request, run)
        return rows, self.synth_classes_md(set_name)

    def synth_save_bank(self, set_name, rows):
        """Write the edited table back as bank.jsonl (an edited bank is what the fit uses)."""
        from generators.synthetic import extract as ex

        with page_errors():
            data, work = self.synth_dirs(set_name)
            path = work / ex.BANK_FILE
            if not path.is_file():
                raise UserError("extract the attributes first")
            old = {e.file: e for e in ex.load_bank(path)}
            if hasattr(rows, "values"):
                rows = rows.values.tolist()
            elif isinstance(rows, dict):
                rows = rows.get("data", [])
            entries = []
            for row in rows or []:
                file, cls, background, pose = (str(x) for x in list(row)[:4])
                if file not in old or old[file].class_name != cls:
                    raise UserError(f"row {file!r}: the file and class columns cannot be changed")
                if not background.strip() or not pose.strip():
                    raise UserError(f"row {file!r}: background and pose cannot be empty")
                changed = (background, pose) != (old[file].background, old[file].pose)
                entries.append(ex.BankEntry(file, cls, background, pose, "edited" if changed else old[file].source))
            if sorted(e.file for e in entries) != sorted(old):
                raise UserError("keep one row per real image")
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(ex.bank_text(entries))
            tmp.replace(path)
            ex.load_bank(path)  # validates (phrase cleaning, duplicates)
        n = sum(1 for e in entries if e.source == "edited")
        return f"saved the caption bank ({len(entries)} rows, {n} edited); the next fit uses it"

    def synth_fit(self, set_name, category, steps, batch_size, preview_every, class_words=FIT.class_words,
                  use_context=FIT.use_context, restart=False, job_id=None, request: gr.Request | None = None):
        """Fine-tune the one LoRA for all classes; streams (status, previews). A fit in the work folder
        resumes (or is found finished) and changed training settings are refused, as the engine's
        fit_config says, unless `restart` ("Start over") discards it first."""
        job = self.board.claim(job_id, "synthetic", f"fit synthetic set {set_name}", _owner(request))
        job.panel = "synth_fit"
        with page_errors(self.board, job):
            data, work = self.synth_dirs(set_name)
            if not data.is_dir():
                raise UserError("upload the class images first")
            cfg = self._fit_config(category, steps, batch_size, class_words, use_context)
            preview_every = int(preview_every or 0)
            if preview_every < 0:
                raise UserError("preview every is at least 0")

        def work_fn(job: Job):
            from generators.run import Run
            from generators.synthetic.fit import fit

            if self.unknown_words(cfg.category):
                job.log(f"warning: the base's tokenizer does not know {', '.join(self.unknown_words(cfg.category))!r}: "
                        "it enters the prompts as pieces without meaning")
            run = Run(progress=job.progress, should_stop=job.should_stop,
                      preview=lambda step, images, captions: job.set_previews(list(zip(images, captions))),
                      preview_every=preview_every, log=job.log)
            result = fit(data, work, cfg, self.device, run, restart=bool(restart))
            if result.stopped:
                job.log(f"stopped at step {result.steps}/{result.config.steps}; the checkpoint is kept: press Fine-tune "
                        "again (Start over unticked) to resume")
            else:
                job.log(f"fitted {len(result.classes)} classes on {result.n_real} images: {result.steps} steps, "
                        f"final loss {result.final_loss:.4f}" + (" (edited caption bank)" if result.bank_edited else ""))
            return result

        yield from self.run_job(job, work_fn, lambda j: (_status_md(j), list(j.previews)))

    def _synth_plan(self, set_name, per_class, seed, context, steps=25, guidance=2.0):
        from generators.synthetic.export import CONTEXTS, ExportConfig, plan_export

        data, work = self.synth_dirs(set_name)
        per_class, seed, steps, guidance = int(per_class), int(seed), int(steps), float(guidance)
        if context not in CONTEXTS:
            raise UserError(f"context is one of {', '.join(CONTEXTS)}")
        if not (1 <= per_class <= 1000 and 0 <= seed < 2**32 and 1 <= steps <= 200 and 0 <= guidance <= 30):
            raise UserError("1-1000 images per class, seed 0..2^32-1, steps 1-200, guidance 0-30")
        cfg = ExportConfig(per_class=per_class, seed=seed, context=context, steps=steps, guidance=guidance)
        return work, cfg, plan_export(work, cfg)

    def synth_preview(self, set_name, per_class, seed, context, steps, guidance, request: gr.Request | None = None):
        """A few images per class exactly as the export would draw them (same seeds, same prompts)."""
        with page_errors():
            work, cfg, plan = self._synth_plan(set_name, min(int(per_class), 8), seed, context, steps, guidance)

        def run(job: Job):
            from generators import diffusion
            from generators.synthetic.export import load_pipeline

            pipe = load_pipeline(plan, self.device)
            out = []
            for k, j in enumerate(plan.jobs):
                if job.should_stop():
                    break
                s = diffusion.GenerationSettings(prompt=j.prompt, negative_prompt=cfg.negative_prompt, seed=j.seed,
                                                 steps=cfg.steps, guidance=cfg.guidance, width=plan.width, height=plan.height)
                out.append((diffusion.generate(pipe, [s])[0], f"{j.class_name}: {j.background} / {j.pose}"))
                job.progress(k + 1, len(plan.jobs))
            return out

        return self.run_sync("synthetic", f"preview synthetic set {set_name}", request, run)

    def synth_export(self, set_name, per_class, seed, context, steps, guidance, job_id=None,
                     request: gr.Request | None = None):
        """Write the data set (class folders, metadata.jsonl, card) and zip it; streams (status, zip, card)."""
        job = self.board.claim(job_id, "synthetic", f"export synthetic set {set_name}", _owner(request))
        job.panel = "synth_export"
        with page_errors(self.board, job):
            work, cfg, plan = self._synth_plan(set_name, per_class, seed, context, steps, guidance)

        def run(job: Job):
            import hashlib

            from generators.run import Run
            from generators.synthetic.export import export

            key = json.dumps([plan.fit_info["lora_sha256"], plan.bank_sha256, cfg.per_class, cfg.seed, cfg.context,
                              cfg.steps, cfg.guidance])  # the same settings continue (or reuse) the same export
            tag = hashlib.sha256(key.encode()).hexdigest()[:10]
            out = self.home / "exports" / f"synthetic-{set_name}-{cfg.per_class}x{len(plan.classes)}-seed{cfg.seed}-{tag}"
            result = export(work, out, cfg, self.device, Run(progress=job.progress, should_stop=job.should_stop,
                                                             log=job.log), zip_archive=True)
            if result.stopped or not result.complete:
                job.log(f"stopped with {len(result.missing)} images to go; export again with the same settings to finish")
                return None
            job.log(f"wrote {result.written} images ({result.skipped} already there) and {result.zip_path.name}")
            return str(result.zip_path), (out / "README.md").read_text()

        yield from self.run_job(job, run, lambda j: self.render_panel("synth_export", j))


def _synthetic_tab(studio: Studio, panels: dict) -> None:
    gr.Markdown("Turn a few real photos per class into a large synthetic training set: extract each image's background "
                "and pose (edit them if you like), fine-tune one LoRA for all classes, then export images that draw "
                "their context from every class's photos.")
    with gr.Row():
        set_name = gr.Textbox(label="Data set name", value="my-set", max_length=48)
        category = gr.Textbox(label="Category (what every class is, e.g. bird)", value=DEFAULT_CATEGORY, max_length=32)
        restart = gr.Checkbox(value=False, label="Start over: the next Extract or Fine-tune discards this set's fit and "
                                                 "checkpoint (the caption bank too if the category changed); unticked, "
                                                 "a fit resumes and changed training settings are refused")
    category_note = gr.Markdown(lambda: studio.category_note(DEFAULT_CATEGORY))
    category.change(studio.category_note, category, category_note, api_visibility="private", show_progress="hidden",
                    **LIGHT)
    classes = gr.Markdown(studio.synth_classes_md("my-set"))
    with gr.Accordion("1. Upload", open=True):
        with gr.Row():
            zip_file = gr.File(label="A zip of class folders (DIR/<class>/<image>)", file_types=[".zip"])
            with gr.Column():
                class_name = gr.Textbox(label="...or one class at a time: class name", max_length=64)
                class_files = gr.File(label="its images (+ optional .txt sidecars)", file_count="multiple",
                                      file_types=list(IMAGE_SUFFIXES + CAPTION_SUFFIXES))
        upload = gr.Button("Add to the data set")
        upload.click(studio.synth_upload, [set_name, zip_file, class_name, class_files], classes,
                     api_name="synth_upload", **LIGHT)
    with gr.Accordion("2. Attributes (editable)", open=True):
        extract = gr.Button("Extract attributes")
        bank = gr.Dataframe(headers=BANK_COLUMNS, interactive=True, label="Caption bank: edit background and pose",
                            wrap=True)
        save = gr.Button("Save edits", size="sm")
        saved = gr.Markdown("")
        extracted = extract.click(studio.synth_extract, [set_name, category, restart], [bank, classes],
                                  api_name="synth_extract", **HEAVY)
        extracted.then(lambda: False, None, restart, api_visibility="private", queue=False)  # start over once
        save.click(studio.synth_save_bank, [set_name, bank], saved, api_name="synth_save_bank", **LIGHT)
    with gr.Accordion("3. Fine-tune", open=True):
        with gr.Row():
            with gr.Column(scale=2):
                with gr.Row():
                    steps = gr.Number(label="Steps", value=FIT.steps, precision=0, minimum=1, maximum=100_000)
                    batch = gr.Number(label="Batch size", value=FIT.batch_size, precision=0, minimum=1, maximum=64)
                    preview_every = gr.Number(label="Preview every (steps, 0 = never)", value=100, precision=0, minimum=0)
                with gr.Row():
                    class_words = gr.Radio([("plain words", "plain"), ("a learnt token per class", "learnt")],
                                           value=FIT.class_words, label="Class names enter the prompt as")
                    use_context = gr.Checkbox(value=FIT.use_context, label="Condition on background and pose (off: DataDream)")
                with gr.Row():
                    fit = gr.Button("Fine-tune", variant="primary")
                    stop = gr.Button("Stop", variant="stop")
            with gr.Column(scale=1):
                status = gr.Markdown("")
                previews = gr.Gallery(label="Previews", columns=4, height=200)
        job_id = gr.State(None)
        reg = fit.click(_registrar(studio, "synthetic", "fit synthetic set {}"), set_name, job_id,
                        api_visibility="private", queue=False)
        fitted = reg.then(studio.synth_fit, [set_name, category, steps, batch, preview_every, class_words,
                                                 use_context, restart, job_id], [status, previews],
                          api_name="synth_fit", **HEAVY)
        fitted.then(studio.synth_classes_md, set_name, classes, api_visibility="private", **LIGHT)
        fitted.then(lambda: False, None, restart, api_visibility="private", queue=False)  # start over once
        panels["synth_fit"] = [status, previews]
        _bind_stop(studio, stop, "synthetic", status, "synth_stop")
    with gr.Accordion("4. Preview and export", open=True):
        with gr.Row():
            per_class = gr.Number(label="Images per class", value=EXPORT.per_class, precision=0, minimum=1, maximum=1000)
            seed = gr.Number(label="Seed", value=EXPORT.seed, precision=0, minimum=0)
            context = gr.Radio(["bank", "same-class", "none"], value=EXPORT.context, label="Context")
            esteps = gr.Slider(1, 200, value=EXPORT.steps, step=1, label="Sampling steps")
            guidance = gr.Slider(0, 30, value=EXPORT.guidance, step=0.5, label="Guidance")
        with gr.Row():
            preview = gr.Button("Preview (up to 8 per class)")
            export = gr.Button("Export (zip)", variant="primary")
        gallery = gr.Gallery(label="Preview", columns=8, height=220)
        estatus = gr.Markdown("")
        download = gr.File(label="Download", interactive=False, height=90)
        with gr.Accordion("Dataset card", open=False):
            card = gr.Markdown("")
        inputs = [set_name, per_class, seed, context, esteps, guidance]
        preview.click(studio.synth_preview, inputs, gallery, api_name="synth_preview", **HEAVY)
        ejob = gr.State(None)
        ereg = export.click(_registrar(studio, "synthetic", "export synthetic set {}"), set_name, ejob,
                            api_visibility="private", queue=False)
        ereg.then(studio.synth_export, inputs + [ejob], [estatus, download, card], api_name="synth_export", **HEAVY)
        panels["synth_export"] = [estatus, download, card]
    set_name.change(studio.synth_classes_md, set_name, classes, api_visibility="private", **LIGHT)
