"""The Museum tab: the styles table, learn a style from uploads (live previews, Stop, resume), the
estimate and speed check, the forgetting heatmap, export. The folder-of-style-folders panel (the web
app's `studio ingest DIR`) is in museum_folder.py."""

from __future__ import annotations

import html
import json
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from generators.museum.config import MuseumConfig
from generators.museum.scores import score_help, score_text, style_metrics
from generators.run import Run
from studio.jobs import Job, duration
from studio.webapp.shared import (CAPTION_SUFFIXES, HEAVY, IMAGE_SUFFIXES, LIGHT, StudioBase, UserError, _bind_stop,
                                  _img_data_uri, _owner, _registrar, _status_md, page_errors)
from studio.webapp.uploads import check_uploads, zip_folder

if TYPE_CHECKING:
    from studio.webapp.app import Studio

DEFAULTS = MuseumConfig()  # the form starts at the engine's defaults

class MuseumMixin(StudioBase):
    """The Museum tab's events."""

    def estimate_md(self, steps, batch) -> str:
        got = self.estimate("museum", steps, batch)
        if got is None:
            return ("**Time:** not measured on this machine yet. Press **Measure speed** (about half a minute) for an "
                    "estimate, or start: the status shows the time left after the first steps.")
        seconds, t = got
        return (f"**Estimated time:** about {duration(seconds)} ({t['per_step']:.2f} s per step at batch {int(batch)} on "
                f"{html.escape(self.device)}, from {html.escape(str(t.get('source', '?')))} on {html.escape(str(t.get('when', '?')))}; "
                "the status shows the time left while it runs)")

    def museum_measure(self, steps, batch_size, request: gr.Request | None = None) -> str:
        """Time a few training steps of the next style on this machine (the museum's earlier styles
        included: their regularizers cost time), plus loading and scoring; remembered for estimates."""
        with page_errors():
            batch = int(batch_size)
            if not 1 <= batch <= 64:
                raise UserError("batch size 1-64")

        def work(job: Job):
            from generators import bases, diffusion, miniworld
            from generators.museum import engine
            from generators.museum.config import MuseumConfig
            from generators.museum.ingest import task_config
            from generators.museum.train import learn_style, load_pipe_style_tokens
            from styles.reference import apply_style

            t0 = time.time()
            pipe = diffusion.load_base(self.base, self.device, "fp32")
            museum = self.open_museum()
            run_fields = {"steps": 4, "batch_size": batch, "checkpoint_every": 10**6}
            cfg = MuseumConfig(**run_fields) if museum is None else task_config(museum, "speed-check", None, run_fields)
            previous, earlier = None, []
            if museum is not None and museum.n_tasks:
                load_pipe_style_tokens(pipe, engine.token_vectors(museum, bases.adapter(pipe)))  # as engine.learn
                previous = museum.lora_state()
                earlier = engine.earlier_styles(museum)
            load_s = time.time() - t0
            size = diffusion.base_resolution(pipe)
            images = [apply_style("sepia", miniworld.generate(0, i, size=size).image, seed=i) for i in range(4)]
            learn_style(pipe, "<studio-speed-check>", images, [None] * len(images), cfg, previous, earlier,
                        run=Run(progress=job.progress, should_stop=job.should_stop))
            rate = job.seconds_per_step()
            if rate is None or job.should_stop():
                return {"stopped": True}
            t1 = time.time()
            diffusion.generate(pipe, [diffusion.GenerationSettings(prompt=engine.SCORE_PROMPTS[0], steps=cfg.sample_steps,
                                                                   width=size, height=size)])
            score_s = (time.time() - t1) * len(engine.SCORE_PROMPTS)
            self.record_timing("museum", rate, batch, load_s + score_s, "a speed check")
            job.log(f"{rate:.2f} s per training step at batch {batch}; loading {load_s:.0f} s, scoring {score_s:.0f} s")
            return {"s_per_step": rate}

        self.run_sync("museum", f"speed check (batch {batch})", request, work)
        return self.estimate_md(steps, batch)

    def base_name(self) -> str:
        from generators.diffusion import base_name

        return base_name(self.base)

    def open_museum(self, create: bool = False):
        from styles.museum import Museum

        if not create and not Museum.index_path(self.museum_dir).exists():
            return None
        return Museum.open(self.museum_dir, base=self.base_name(), create=create)

    def style_names(self) -> list[str]:
        try:
            museum = self.open_museum()
        except ValueError:
            return []
        return [s.name for s in museum.styles] if museum else []

    def interrupted(self) -> list[dict]:
        """The museum's interrupted tasks, each with whether its uploaded images are still staged here."""
        try:
            museum = self.open_museum()
        except ValueError:
            return []
        return [{**task, "images_kept": (self.home / "uploads" / "museum" / task["name"]).is_dir()}
                for task in (museum.interrupted() if museum else [])]

    def styles_html(self) -> str:
        try:
            museum = self.open_museum()
        except ValueError as err:
            return f"<p>{html.escape(str(err))}</p>"
        head = f"<p>Museum <code>{html.escape(str(self.museum_dir))}</code> on base <code>{html.escape(self.base_name())}</code>"
        if museum is None or not museum.styles:
            rows = "<p>No styles learnt yet: upload 3-50 images below and press <b>Learn style</b>.</p>"
        else:
            body = []
            for s in museum.styles:
                thumb = museum.thumb_path(s.name)
                img = f'<img src="{_img_data_uri(thumb)}" alt="{html.escape(s.name)}">' if thumb.is_file() else ""
                try:
                    manifest = museum.manifest(s.name)
                except Exception:  # noqa: BLE001 - an unreadable manifest only costs the score
                    manifest = {}
                metrics = style_metrics(museum, s)
                steps = (manifest.get("result") or {}).get("steps", "")
                body.append(f"<tr><td>{img}</td><td>{html.escape(s.name)}</td><td><code>{html.escape(s.token)}</code></td>"
                            f"<td>{s.images}</td><td>{steps}</td><td>{html.escape(s.created)}</td>"
                            f"<td>{html.escape(score_text(metrics))}</td></tr>")
            rows = ("<table><thead><tr><th></th><th>name</th><th>token</th><th>images</th><th>steps</th><th>date</th>"
                    "<th>how well it is drawn</th></tr></thead><tbody>" + "".join(body) + "</tbody></table>"
                    f"<p><small>{html.escape(score_help())}</small></p>")
        head += f": {len(museum.styles) if museum else 0} styles.</p>"
        stopped = self.interrupted()
        if stopped:
            items = "".join(
                f"<li>{html.escape(t['name'])}: stopped at step {t['step']}/{t['steps']}"
                + (" - press <b>Learn style</b> with this name and no files to resume</li>" if t["images_kept"]
                   else " - upload the same images with this name to resume</li>")
                for t in stopped)
            rows += f"<p>Interrupted tasks (their checkpoints are kept):</p><ul>{items}</ul>"
        return f'<div class="studio-table">{head}{rows}</div>'

    def forgetting_html(self) -> str:
        """The museum's forgetting matrix as a heatmap: the latest forgetting*.json in the museum folder,
        {"styles": [names], "matrix": [[score of style j after learning task i]]}, or the file
        bench/forgetting.py writes ({"styles", "results": {method: {"matrix"}}}: its "full" method)."""
        files = sorted(self.museum_dir.glob("forgetting*.json"), key=lambda f: f.stat().st_mtime_ns,
                       reverse=True) if self.museum_dir.is_dir() else []  # the latest run first
        if not files:
            return ("<p>No forgetting matrix in this museum yet (a benchmark run writes "
                    "<code>forgetting.json</code> into the museum: how well each style is drawn after each later task).</p>")
        try:
            data = json.loads(files[0].read_text())
            names = [str(x) for x in data["styles"]]
            if "results" in data:
                data = data["results"].get("full") or next(iter(data["results"].values()))
            # None or NaN: style j not learnt yet after task i
            matrix = [[None if v is None or v != v else float(v) for v in row] for row in data["matrix"]]
        except (ValueError, TypeError, AttributeError, KeyError, StopIteration) as err:
            return f"<p>{html.escape(files[0].name)} is not a readable forgetting matrix ({html.escape(str(err))}).</p>"
        values = [v for row in matrix for v in row if v is not None]
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
        body = []
        for i, row in enumerate(matrix):
            cells = []
            for v in row:
                if v is None:
                    cells.append("<td></td>")
                    continue
                x = 0.5 if hi == lo else (v - lo) / (hi - lo)
                color = f"hsl({int(120 * x)}, 70%, {75 - 20 * x:.0f}%)"
                cells.append(f'<td style="background:{color};color:#000">{v:.2f}</td>')
            label = html.escape(names[i]) if i < len(names) else str(i + 1)
            body.append(f"<tr><th>after {label}</th>{''.join(cells)}</tr>")
        return (f'<div class="studio-table studio-heat"><p>{html.escape(files[0].name)}: rows = after learning task i, '
                f"columns = style j (higher is better; red = forgotten).</p><table><thead><tr><th></th>{head}</tr></thead>"
                f"<tbody>{''.join(body)}</tbody></table></div>")

    def museum_refresh(self):
        names = self.style_names()
        return (self.styles_html(), self.forgetting_html(),
                gr.update(choices=names, value=names[-1] if names else None),
                gr.update(choices=names))

    def _stage_style(self, files, name: str, token: str, description: str) -> tuple[Path, bool]:
        """The style's upload folder (new files replace old ones); (folder, resuming)."""
        from styles.folder import MAX_IMAGES, check_style_name

        name = check_style_name((name or "").strip())
        token = (token or "").strip()
        if token and (len(token) > 48 or not re.fullmatch(r"<?[A-Za-z0-9_-]+>?", token)):
            raise UserError("a token is 1-48 letters, digits, '_' or '-', optionally in <angle brackets>")
        if len(description or "") > 500:
            raise UserError("the description is limited to 500 characters")
        museum = self.open_museum()
        if museum is not None and museum.has(name):
            raise UserError(f"the museum already holds a style named {name}; pick another name "
                            f"(or `studio ingest --new-version` to learn a second version beside it)")
        folder = self.home / "uploads" / "museum" / name
        uploads = check_uploads(files, IMAGE_SUFFIXES + CAPTION_SUFFIXES, 2 * MAX_IMAGES, "style files")
        n_images = sum(Path(safe).suffix in IMAGE_SUFFIXES for _, safe in uploads)
        if n_images > MAX_IMAGES:
            raise UserError(f"too many style images: {n_images} uploaded, at most {MAX_IMAGES}")
        if not uploads:
            if folder.is_dir() and any(t["name"] == name for t in self.interrupted()):
                return folder, True
            raise UserError("upload 3-50 images of the style (png, jpg, webp; optional .txt captions beside them)")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for src, safe in uploads:
            shutil.copyfile(src, folder / safe)
        settings = {"name": name}
        if token:
            settings["token"] = token if token.startswith("<") else f"<{token}>"
        if description:
            settings["description"] = description
        (folder / "style.toml").write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
        return folder, False

    def museum_learn(self, files, name, token, description, steps, batch_size, preview_every, job_id=None,
                     request: gr.Request | None = None):
        """Learn a style from uploaded images into the museum; streams (status, previews)."""
        job = self.board.claim(job_id, "museum", f"learn style {name}", _owner(request))
        job.panel = "museum"
        with page_errors(self.board, job):
            folder, resuming = self._stage_style(files, name, token, description)
            steps, batch_size, preview_every = int(steps), int(batch_size), int(preview_every or 0)
            if not 1 <= steps <= 100_000 or not 1 <= batch_size <= 64 or preview_every < 0:
                raise UserError("steps must be 1-100000, batch size 1-64 and preview every at least 0")
        guess = self.estimate("museum", steps, batch_size)
        job.estimate_s = guess[0] if guess else None

        def work(job: Job):
            from generators import diffusion
            from generators.museum.ingest import ingest, made_captions_line, plan_style

            museum = self.open_museum(create=True)
            overrides = {"steps": steps, "batch_size": batch_size, "checkpoint_every": max(1, min(50, steps // 4 or 1))}
            item = plan_style(folder, museum, diffusion.resolution_of(self.base), name, overrides)
            if item.action in ("refuse", "invalid"):
                raise UserError(item.reason + "".join(f"; rejected {f}: {why}" for f, why in item.rejected))
            if resuming and item.action != "resume":
                raise UserError(f"no checkpoint left for {item.name} ({item.reason or 'nothing to resume'}); "
                                "upload its images again")
            cfg, style = item.config, item.style
            if item.action == "resume":
                job.log(f"resuming {style.name} from its checkpoint ({cfg.steps} steps in all)")
            elif item.reason:
                job.log(f"{style.name}: {item.reason}")
            job.log(f"{len(style.images)} images ({len(style.rejected)} rejected) -> token {style.token}; "
                    f"{cfg.steps} steps of batch {cfg.batch_size} (images x repeats = {cfg.steps * cfg.batch_size} samples)")
            for f, why in style.rejected:
                job.log(f"rejected {f}: {why}")

            def progress(step, total, **info):
                job.progress(step, total, **info)
                if preview_every and step % preview_every == 0 and step < total:
                    job.log(f"step {step}/{total}" + (f": loss {info['loss']:.4f}" if "loss" in info else ""))

            run = Run(progress=progress, should_stop=job.should_stop, preview_every=preview_every,
                      preview=lambda step, images, captions: job.set_previews([(im, f"step {step}") for im in images]))
            manifest = ingest(museum, [item], self.base, self.device, run, self.evaluator())[0]
            if manifest.get("stopped"):
                job.log(f"stopped at step {manifest['result']['steps']}/{cfg.steps}; the checkpoint is kept: "
                        "press Learn style again with the same name (no files needed) to resume")
            else:
                thumb = museum.thumb_path(style.name)
                if thumb.is_file():  # as an image, not a path: the museum folder is not served
                    from PIL import Image

                    with Image.open(thumb) as im:
                        job.set_previews([(im.convert("RGB"), f"{style.name}: learnt")])
                job.log(f"learnt {style.name} as {style.token} in {manifest['timings']['total_seconds']:.0f} s, "
                        f"final loss {manifest['result']['final_loss']:.4f}; {score_text(manifest.get('metrics'))}")
                made = made_captions_line(manifest)
                if made:
                    job.log(made)
            self.record_job_timing(job, cfg.batch_size)
            return manifest

        yield from self.run_job(job, work, lambda j: (_status_md(j), list(j.previews)))

    def museum_export(self, name, fmt):
        from generators.museum.export import export_style

        if fmt not in ("diffusers", "kohya"):
            raise gr.Error("format must be diffusers or kohya")
        with page_errors():
            museum = self.open_museum()
            if museum is None:
                raise UserError("the museum is empty: learn a style first")
            museum.style(name or "")
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = self.home / "exports" / f"{name}-{fmt}-{stamp}"
            export_style(museum, name, fmt, out)
            path = zip_folder(out, out.with_suffix(".zip"))
            shutil.rmtree(out, ignore_errors=True)
            return str(path)


def _museum_tab(studio: Studio) -> dict:
    from styles.folder import MAX_IMAGES

    ui = {}
    ui["styles"] = gr.HTML(studio.styles_html())
    ui["refresh"] = gr.Button("Refresh", size="sm")
    with gr.Accordion("Add a style", open=True):
        with gr.Row():
            with gr.Column(scale=2):
                files = gr.File(label=f"Style images (3-{MAX_IMAGES}; png, jpg, webp; optional .txt captions)",
                                file_count="multiple", file_types=list(IMAGE_SUFFIXES + CAPTION_SUFFIXES))
                with gr.Row():
                    name = gr.Textbox(label="Name", placeholder="lowercase letters, digits, _ or -", max_length=48)
                    token = gr.Textbox(label="Token (default <name>)", max_length=50)
                description = gr.Textbox(label="Description", max_length=500)
                with gr.Row():
                    steps = gr.Number(label="Steps", value=DEFAULTS.steps, precision=0, minimum=1, maximum=100_000)
                    batch = gr.Number(label="Batch size", value=DEFAULTS.batch_size, precision=0, minimum=1, maximum=64)
                    preview_every = gr.Number(label="Preview every (steps, 0 = never)", value=50, precision=0, minimum=0)
                with gr.Row():
                    estimate = gr.Markdown(lambda: studio.estimate_md(DEFAULTS.steps, DEFAULTS.batch_size))
                    measure = gr.Button("Measure speed", size="sm", scale=0, min_width=140)
                with gr.Row():
                    learn = gr.Button("Learn style", variant="primary")
                    stop = gr.Button("Stop", variant="stop")
            with gr.Column(scale=1):
                status = gr.Markdown("")
                previews = gr.Gallery(label="Previews", columns=2, height=260)
    ui["status"], ui["previews"] = status, previews
    for box in (steps, batch):
        box.change(studio.estimate_md, [steps, batch], estimate, api_visibility="private", show_progress="hidden", **LIGHT)
    measure.click(studio.museum_measure, [steps, batch], estimate, api_name="museum_measure", **HEAVY)
    job_id = gr.State(None)
    reg = learn.click(_registrar(studio, "museum", "learn style {}"), name, job_id, api_visibility="private", queue=False)
    ui["learn_event"] = reg.then(studio.museum_learn, [files, name, token, description, steps, batch, preview_every, job_id],
                                 [status, previews], api_name="museum_learn", **HEAVY)
    _bind_stop(studio, stop, "museum", status, "museum_stop")
    with gr.Accordion("Learn a folder of style folders (on this machine)", open=False):
        gr.Markdown("The web app's `studio ingest DIR`: every sub-folder of images is one style (its name the folder's, "
                    "optional `style.toml` and `.txt` captions inside), learnt in sorted order or the order of "
                    "`DIR/order.txt`. A style already in the museum with the same images is skipped; the same name with "
                    "other images is refused unless *new version*. The folder is read on the server, never written.")
        with gr.Row():
            ifolder = gr.Textbox(label="Folder (full path on this machine)", placeholder="/data/styles", scale=3)
            isteps = gr.Number(label=f"Steps per style (0 = style.toml's, else {DEFAULTS.steps})", value=0, precision=0,
                               minimum=0)
            inew = gr.Checkbox(label="New version for a changed style (<name>-v2)", value=False)
        with gr.Row():
            iplan = gr.Button("Plan")
            ilearn = gr.Button("Learn all", variant="primary")
            istop = gr.Button("Stop", variant="stop")
        ireport = gr.Markdown("")
        iplan.click(studio.museum_plan, [ifolder, isteps, inew], ireport, api_name="museum_plan", **LIGHT)
        ijob = gr.State(None)
        ireg = ilearn.click(_registrar(studio, "museum", "ingest {}"), ifolder, ijob, api_visibility="private", queue=False)
        ui["ingest_event"] = ireg.then(studio.museum_ingest, [ifolder, isteps, inew, ijob], [status, previews, ireport],
                                       api_name="museum_ingest", **HEAVY)
        _bind_stop(studio, istop, "museum", status, "museum_ingest_stop")
    for event in (ui["learn_event"], ui["ingest_event"]):  # a finished job measured this machine: a new estimate
        event.then(studio.estimate_md, [steps, batch], estimate, api_visibility="private", show_progress="hidden", **LIGHT)
    ui["estimate"], ui["estimate_inputs"] = estimate, [steps, batch]
    with gr.Accordion("Forgetting", open=False):
        ui["heatmap"] = gr.HTML(studio.forgetting_html())
    with gr.Accordion("Export a style", open=False):
        with gr.Row():
            ui["export_name"] = gr.Dropdown(label="Style", choices=studio.style_names(), allow_custom_value=True)
            fmt = gr.Radio(["diffusers", "kohya"], value="diffusers", label="Format")
            export = gr.Button("Export (zip)")
        out = gr.File(label="Download", interactive=False, height=90)
        export.click(studio.museum_export, [ui["export_name"], fmt], out, api_name="museum_export")
    return ui
