"""The Lifelong GAN tab: learn a task from about 10 images (live samples, Stop, resume), sample a
task, and every task side by side on the same latents."""

from __future__ import annotations

import html
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from generators.gan.mode_seeking import ModeSeekingConfig
from generators.gan.task_store import TaskStore
from generators.gan.task_trainer import TrainConfig
from generators.run import Run
from studio.jobs import Job
from studio.webapp.shared import (HEAVY, IMAGE_SUFFIXES, LIGHT, StudioBase, UserError, _bind_stop, _owner, _registrar,
                                  _status_md, page_errors)
from studio.webapp.uploads import check_uploads

if TYPE_CHECKING:
    from studio.webapp.app import Studio

GAN_COLUMNS = ["task", "#", "images", "iterations", "rank", "% of G stored", "train s", "created"]


def _labelled_grid(rows: list[tuple[str, list]], min_side: int = 64):
    """One row of tiles per (label, images), the label in a left margin."""
    from PIL import Image, ImageDraw

    side = max(min_side, max(im.size[0] for _, ims in rows for im in ims))
    margin, pad = 96, 2
    cols = max(len(ims) for _, ims in rows)
    grid = Image.new("RGB", (margin + cols * (side + pad), len(rows) * (side + pad)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for r, (label, ims) in enumerate(rows):
        y = r * (side + pad)
        draw.text((4, y + side // 2 - 6), label[:14], fill=(0, 0, 0))
        for c, im in enumerate(ims):
            grid.paste(im.resize((side, side), Image.NEAREST), (margin + c * (side + pad), y))
    return grid


class GanMixin(StudioBase):
    """The Lifelong GAN tab's events."""

    @property
    def gan_store(self) -> Path:
        return self.home / "gan" / "store"

    def gan_refresh(self):
        """(tasks table, note on unfinished tasks, task dropdown update)."""
        from generators.gan.task_store import TaskStore, list_tasks, unfinished_tasks

        rows, names, note = [], [], ""
        try:
            if TaskStore(self.gan_store).exists():
                for t in list_tasks(self.gan_store):
                    rows.append([t["name"], t["index"], t["images"], t["iters"], t["rank"],
                                 round(t["storage_percent_of_G"], 3), round(t["train_s"]), t["created_at"]])
                    names.append(t["name"])
            else:
                note = "No tasks yet: upload about 10 images of a new domain and press **Learn task**."
            stopped = unfinished_tasks(self.gan_store)
            if stopped:
                note += "\n\nInterrupted (checkpoint kept; press Learn task with the same name and no files to resume): " + \
                        ", ".join(f"{html.escape(t['name'])} at {t['step']}/{t['iters']}" for t in stopped)
        except (ValueError, FileNotFoundError) as err:
            note = html.escape(str(err))
        return rows, note, gr.update(choices=names, value=names[-1] if names else None)

    def gan_learn(self, files, name, iters, mode_seeking, preview_every, job_id=None, request: gr.Request | None = None):
        """Learn a GAN task from uploaded images; streams (status, previews)."""
        from generators.gan.task_store import check_task_name

        job = self.board.claim(job_id, "gan", f"learn GAN task {name}", _owner(request))
        job.panel = "gan"
        with page_errors(self.board, job):
            name = check_task_name(str(name or "").strip())
            iters, preview_every = int(iters), int(preview_every or 0)
            if not 1 <= iters <= 100_000 or preview_every < 0:
                raise UserError("iterations must be 1-100000 and preview every at least 0")
            if mode_seeking not in ("perceptual", "pixel", "off"):
                raise UserError("mode seeking is perceptual, pixel or off")
            folder = self.home / "uploads" / "gan" / name
            uploads = check_uploads(files, IMAGE_SUFFIXES, 50, "task images")
            if uploads:
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                for src, safe in uploads:
                    shutil.copyfile(src, folder / safe)
            elif not (folder.is_dir() and TaskStore(self.gan_store).work_dir(name).is_dir()):
                raise UserError("upload the task's images (about 10; png, jpg, webp)")

        def work(job: Job):
            from generators.gan.lifelong import learn_task, sample_task
            from generators.gan.sampling import PREVIEW_N, PREVIEW_SEED, to_pil
            from generators.gan.task_trainer import TrainConfig

            train = TrainConfig(iters=iters, checkpoint_every=max(1, min(100, iters // 4 or 1)))
            ms = ModeSeekingConfig(enabled=mode_seeking != "off", distance="pixel" if mode_seeking == "pixel" else "perceptual")
            run = Run(progress=job.progress, should_stop=job.should_stop, preview_every=preview_every, log=job.log,
                      preview=lambda step, images, captions: job.set_previews(list(zip(images, captions))))
            job.log(f"learning {name} from {folder.name}: {iters} iterations, mode seeking {mode_seeking}")
            meta = learn_task(self.gan_store, name, folder, base=self.gan_base, train=train, mode_seeking=ms,
                              device=self.device, run=run)
            if meta.get("stopped"):
                job.log(f"stopped at iteration {meta['step']}/{meta['iters']}; the checkpoint is kept: press Learn task "
                        "again with the same name (no files needed) to resume")
            else:  # the finished task's own samples of the preview seeds
                images = to_pil(sample_task(self.gan_store, name, PREVIEW_N, PREVIEW_SEED, base=self.gan_base,
                                            device=self.device))
                job.set_previews([(im, f"{name}: seed {PREVIEW_SEED} #{i}") for i, im in enumerate(images)])
                job.log(f"learnt {name}: {len(meta['images'])} images, {meta['storage']['params']} stored parameters "
                        f"({meta['storage']['percent_of_G']:.2f} % of G), {meta['timings']['train_s']:.0f} s")
            return meta

        yield from self.run_job(job, work, lambda j: (_status_md(j), list(j.previews)))

    def gan_sample(self, name, seed, n, truncation, request: gr.Request | None = None):
        """n samples of a task from `seed` (the same seed gives the same images)."""
        seed, n, truncation = int(seed), int(n), float(truncation)
        if not (0 <= seed < 2**32 and 1 <= n <= 64 and 0 <= truncation <= 2):
            raise gr.Error("seed 0..2^32-1, 1-64 images, truncation 0-2")

        def work(job: Job):
            from generators.gan.lifelong import sample_task
            from generators.gan.sampling import to_pil

            images = sample_task(self.gan_store, str(name or ""), n, seed, truncation, base=self.gan_base,
                                 device=self.device)
            return [(im, f"{name} seed {seed} #{i}") for i, im in enumerate(to_pil(images))]

        return self.run_sync("gan", f"sample GAN task {name}", request, work)

    def gan_grid(self, seed, n, truncation, include_base, request: gr.Request | None = None):
        """One row per task (and the base), the same latents in every column."""
        seed, n, truncation = int(seed), int(n), float(truncation)
        if not (0 <= seed < 2**32 and 1 <= n <= 16 and 0 <= truncation <= 2):
            raise gr.Error("seed 0..2^32-1, 1-16 columns, truncation 0-2")

        def work(job: Job):
            from generators.gan.folder import load_generator
            from generators.gan.lifelong import load_task_generator
            from generators.gan.sampling import generate, to_pil
            from generators.gan.task_store import TaskStore

            st = TaskStore(self.gan_store)
            names = st.task_names() if st.exists() else []
            if not names:
                raise UserError("no GAN tasks yet: learn one first")
            rows = []
            if include_base:
                base_path, _ = st.base_path(self.gan_base)
                rows.append(("base", to_pil(generate(load_generator(base_path, device=self.device), n, seed, truncation))))
            for k, task in enumerate(names, 1):
                G, _ = load_task_generator(self.gan_store, task, base=self.gan_base, device=self.device)
                rows.append((task, to_pil(generate(G, n, seed, truncation))))
                job.progress(k, len(names))
            return _labelled_grid(rows)

        return self.run_sync("gan", "GAN grid across tasks", request, work)


def _gan_tab(studio: Studio, panels: dict) -> list:
    gr.Markdown("A frozen GAN base learns one new domain per task from about 10 images (LeFT modulators, "
                "about 1 % of the generator each); earlier tasks never change.")
    tasks = gr.Dataframe(headers=GAN_COLUMNS, interactive=False, label="Tasks")
    note = gr.Markdown("")
    refresh = gr.Button("Refresh", size="sm")
    with gr.Accordion("Learn a task", open=True):
        with gr.Row():
            with gr.Column(scale=2):
                files = gr.File(label="Task images (2-50, about 10 is typical; png, jpg, webp)", file_count="multiple",
                                file_types=list(IMAGE_SUFFIXES))
                with gr.Row():
                    name = gr.Textbox(label="Task name", placeholder="lowercase letters, digits, _ or -", max_length=48)
                    iters = gr.Number(label="Iterations", value=TrainConfig().iters, precision=0, minimum=1,
                                      maximum=100_000)
                    ms = ModeSeekingConfig()  # the radio starts at the engine's default
                    mode = gr.Radio(["perceptual", "pixel", "off"], value=ms.distance if ms.enabled else "off",
                                    label="Mode seeking")
                    preview_every = gr.Number(label="Preview every (iterations, 0 = never)", value=50, precision=0, minimum=0)
                with gr.Row():
                    learn = gr.Button("Learn task", variant="primary")
                    stop = gr.Button("Stop", variant="stop")
            with gr.Column(scale=1):
                status = gr.Markdown("")
                previews = gr.Gallery(label="Samples", columns=4, height=260)
    job_id = gr.State(None)
    reg = learn.click(_registrar(studio, "gan", "learn GAN task {}"), name, job_id, api_visibility="private", queue=False)
    learned = reg.then(studio.gan_learn, [files, name, iters, mode, preview_every, job_id], [status, previews],
                       api_name="gan_learn", **HEAVY)
    panels["gan"] = [status, previews]
    _bind_stop(studio, stop, "gan", status, "gan_stop")
    with gr.Accordion("Sample", open=True):
        with gr.Row():
            task = gr.Dropdown(label="Task", choices=[], allow_custom_value=True)
            seed = gr.Number(label="Seed", value=0, precision=0, minimum=0)
            n = gr.Slider(1, 64, value=8, step=1, label="Images")
            psi = gr.Slider(0, 1.5, value=1.0, step=0.05, label="Truncation ψ")
            sample = gr.Button("Sample")
        samples = gr.Gallery(label="Samples", columns=8, height=200)
        sample.click(studio.gan_sample, [task, seed, n, psi], samples, api_name="gan_sample", **HEAVY)
    with gr.Accordion("Every task side by side (the same seeds)", open=False):
        with gr.Row():
            gseed = gr.Number(label="Seed", value=0, precision=0, minimum=0)
            gn = gr.Slider(1, 16, value=8, step=1, label="Columns")
            gpsi = gr.Slider(0, 1.5, value=1.0, step=0.05, label="Truncation ψ")
            with_base = gr.Checkbox(value=True, label="Base as the first row")
            grid_btn = gr.Button("Draw the grid")
        grid = gr.Image(label="Rows: tasks; columns: the same latents", type="pil", format="png", interactive=False)
        grid_btn.click(studio.gan_grid, [gseed, gn, gpsi, with_base], grid, api_name="gan_grid", **HEAVY)
    outs = [tasks, note, task]
    refresh.click(studio.gan_refresh, None, outs, api_name="gan_tasks", **LIGHT)
    learned.then(studio.gan_refresh, None, outs, api_visibility="private", **LIGHT)
    return outs
