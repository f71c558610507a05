"""The Generate tab: prompt (and museum styles) -> PNGs with their settings embedded; reuse the
settings of a picked or uploaded image."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from generators.run import Run
from studio.jobs import Job
from studio.webapp.shared import (HEAVY, LIGHT, MAX_BATCH, MAX_PROMPT, StudioBase, UserError, _bind_stop, _owner,
                                  _registrar, page_errors)
from studio.webapp.uploads import check_uploads

if TYPE_CHECKING:
    from studio.webapp.app import Studio


class GenerateMixin(StudioBase):
    """The Generate tab's events."""

    def pipeline(self, with_museum: bool):
        """The generation pipeline, cached until the museum changes."""
        from generators import diffusion
        from styles.museum import Museum

        index = Museum.index_path(self.museum_dir)
        stamp = index.stat().st_mtime_ns if with_museum and index.exists() else None
        key = (self.base, self.device, stamp)
        if self._pipe[0] != key:
            self._pipe = (None, None)
            if stamp is not None:
                from generators.museum.engine import load_museum_pipeline

                pipe = load_museum_pipeline(self.open_museum(), self.base, self.device, "fp32")
            else:
                pipe = diffusion.load_base(self.base, self.device, "fp32")
            self._pipe = (key, pipe)
        return self._pipe[1]

    def generate(self, prompt, negative, styles, seed, steps, guidance, batch, job_id=None,
                 request: gr.Request | None = None):
        """Draw `batch` images (seeds seed, seed+1, ...); streams (gallery, files, status, paths)."""
        job = self.board.claim(job_id, "generate", f"generate: {str(prompt)[:40]}", _owner(request))
        job.panel = "generate"
        with page_errors(self.board, job):
            prompt, negative = str(prompt or "").strip(), str(negative or "")
            styles = [styles] if isinstance(styles, str) else list(styles or [])
            seed, steps, batch, guidance = int(seed), int(steps), int(batch), float(guidance)
            if not prompt:
                raise UserError("write a prompt")
            if len(prompt) > MAX_PROMPT or len(negative) > MAX_PROMPT:
                raise UserError(f"prompts are limited to {MAX_PROMPT} characters")
            if not (0 <= seed < 2**32 and 1 <= steps <= 200 and 1 <= batch <= MAX_BATCH and 0 <= guidance <= 30):
                raise UserError(f"seed 0..2^32-1, steps 1-200, batch 1-{MAX_BATCH}, guidance 0-30")
            known = self.style_names()
            unknown = [s for s in styles if s not in known]
            if unknown:
                raise UserError(f"no style {unknown[0]!r} in the museum (styles: {', '.join(known) or 'none yet'})")

        def work(job: Job):
            from generators import diffusion

            with_museum = bool(known)
            pipe = self.pipeline(with_museum)
            full = prompt
            if styles:
                from generators.museum.train import fit_prompt_with_note

                museum = self.open_museum()
                # The pipeline truncates at the text encoder's window, which would cut the style tokens off
                # the end of a long prompt: shorten the content instead, as training and `studio generate` do.
                full, note = fit_prompt_with_note(pipe.tokenizer, prompt, [museum.style(n).token for n in styles])
                if note:
                    job.log(note)
            size = diffusion.base_resolution(pipe)
            out_dir = self.home / "outputs" / time.strftime("%Y-%m-%d")
            out_dir.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%H%M%S")
            job.log(f"prompt: {full}")
            settings = [diffusion.GenerationSettings(prompt=full, negative_prompt=negative, seed=seed + i, steps=steps,
                                                     guidance=guidance, width=size, height=size, base=self.base_name(),
                                                     scheduler=type(pipe.scheduler).__name__, styles=tuple(styles))
                        for i in range(batch)]
            written: list[tuple[str, str]] = []

            def keep(_done, images, _captions):
                """Each finished batch is written and shown at once (the gallery renders job.outputs)."""
                for image in images:
                    s = settings[len(written)]
                    path = out_dir / f"{stamp}-job{job.id}-seed{s.seed}.png"
                    diffusion.save_with_settings(image, s, path)
                    written.append((str(path), f"seed {s.seed}"))
                    job.add_output(str(path))
                job.set_previews(written)

            # One job, the whole batch: progress in denoising steps, Stop after the current step (the
            # images of the batches finished by then are kept).
            images = diffusion.generate(pipe, settings, run=Run(progress=job.progress, should_stop=job.should_stop,
                                                                preview=keep))
            job.log(f"wrote {len(job.outputs)} images to $STUDIO_HOME/{out_dir.relative_to(self.home)}")
            return {"outputs": list(job.outputs), "stopped": images.stopped}

        yield from self.run_job(job, work, lambda j: self.render_panel("generate", j))

    def settings_values(self, path):
        from generators.diffusion import read_settings

        with page_errors():
            try:
                s = read_settings(path)
            except UserError:
                raise
            except Exception as err:  # noqa: BLE001 - not a PNG at all, or its settings unreadable: one message
                raise UserError(f"not a PNG with Studio settings ({err})") from None
        prompt = s.prompt
        names = self.style_names()
        styles = [n for n in s.styles if n in names]
        if s.styles:  # the stored prompt carries the style tokens: show the prompt as typed
            try:
                museum = self.open_museum()
                for n in styles:
                    prompt = prompt.replace(f", {museum.style(n).token}", "").replace(museum.style(n).token, "").strip()
            except Exception:  # noqa: BLE001
                pass
        return prompt, s.negative_prompt, styles, s.seed, s.steps, s.guidance

    def reuse_settings(self, file):
        """Fill the form from a PNG written by Studio (its embedded settings)."""
        if not file:
            raise gr.Error("upload a PNG made by Studio")
        check_uploads([file], (".png",), 1, "images")
        return self.settings_values(file)

    def reuse_selected(self, paths, index):
        """Fill the form from the picked gallery image (by index into this session's outputs)."""
        if index is None or not paths or not 0 <= int(index) < len(paths):
            raise gr.Error("pick an image in the gallery first")
        path = Path(paths[int(index)]).resolve()
        if not path.is_relative_to(self.home / "outputs"):
            raise gr.Error("that image is not one of Studio's outputs")
        return self.settings_values(path)


def _generate_tab(studio: Studio) -> dict:
    from generators.diffusion import GenerationSettings

    defaults = GenerationSettings(prompt="")  # the form starts at the engine's defaults
    ui = {}
    with gr.Row():
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Prompt", lines=2, max_length=MAX_PROMPT,
                                value="a red fish on the sea background, large, facing left, in the center")
            negative = gr.Textbox(label="Negative prompt", max_length=MAX_PROMPT)
            ui["styles"] = gr.Dropdown(label="Styles (from the museum)", choices=studio.style_names(), multiselect=True,
                                         allow_custom_value=True)  # checked against the museum on the server
            with gr.Row():
                seed = gr.Number(label="Seed", value=0, precision=0, minimum=0)
                steps = gr.Slider(1, 200, value=defaults.steps, step=1, label="Steps")
                guidance = gr.Slider(0, 30, value=defaults.guidance, step=0.5, label="Guidance")
                batch = gr.Slider(1, MAX_BATCH, value=4, step=1, label="Batch (image i uses seed + i)")
            with gr.Row():
                go = gr.Button("Generate", variant="primary")
                stop = gr.Button("Stop", variant="stop")
            status = gr.Markdown("")
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="Images (settings are embedded in every PNG)", columns=4, height=360,
                                 format="png", interactive=False)
            files = gr.File(label="Downloads", file_count="multiple", interactive=False)
            with gr.Row():
                reuse = gr.Button("Reuse settings of the picked image", size="sm", scale=0, min_width=260)
                reuse_file = gr.File(label="...or of a Studio PNG (drop it here)", file_types=[".png"], height=140)
    paths = gr.State([])
    picked = gr.State(None)
    job_id = gr.State(None)
    reg = go.click(_registrar(studio, "generate", "generate: {:.40}"), prompt, job_id, api_visibility="private", queue=False)
    reg.then(studio.generate, [prompt, negative, ui["styles"], seed, steps, guidance, batch, job_id],
             [gallery, files, status, paths], api_name="generate", **HEAVY)
    ui["panel"] = [gallery, files, status, paths]
    _bind_stop(studio, stop, "generate", status, "generate_stop")

    def pick(evt: gr.SelectData):
        return evt.index

    gallery.select(pick, None, picked, api_visibility="private", queue=False)
    form = [prompt, negative, ui["styles"], seed, steps, guidance]
    reuse.click(studio.reuse_selected, [paths, picked], form, api_visibility="private", **LIGHT)
    reuse_file.upload(studio.reuse_settings, reuse_file, form, api_name="reuse_settings", **LIGHT)
    return ui
