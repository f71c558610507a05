"""The Jobs tab (every heavy job and its log) and how a (re)opened page follows its user's latest job
of every panel: jobs belong to the board, not to the page."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

import gradio as gr

from studio.jobs import Job
from studio.webapp.shared import LIGHT, StudioBase, _owner, _status_md

if TYPE_CHECKING:
    from studio.webapp.app import Studio

JOB_COLUMNS = ["id", "kind", "what", "status", "progress", "user", "queued", "took"]

# The panels a page follows (follow_page) and how many outputs each has.
PANELS = {"museum": 2, "generate": 4, "gan": 2, "synth_fit": 2, "synth_export": 3}


class JobsMixin(StudioBase):
    """Following jobs from any page, and the Jobs tab's events."""

    def render_panel(self, panel: str, job: Job):
        """What a page shows for a job in its panel (the same values its event streams)."""
        if panel == "generate":
            paths = list(job.outputs)
            seeds = [re.search(r"seed(\d+)\.png$", str(p)) for p in paths]
            gallery = [(p, f"seed {m.group(1)}" if m else "") for p, m in zip(paths, seeds)]
            return gallery, paths, _status_md(job), paths
        if panel == "synth_export":
            done = job.result if job.done and job.result else (None, "")
            return _status_md(job), done[0], done[1]
        return _status_md(job), list(job.previews)

    def follow_page(self, request: gr.Request | None = None, poll: float = 0.5, limit_s: float | None = None):
        """A freshly (re)opened page's view of this user's jobs: for every panel, its latest job, streamed
        until it ends (a job outlives the tab that started it; this is how the next tab finds it).
        Yields one value per output of PANELS, gr.skip() where nothing changed."""
        owner = _owner(request)
        start = {p: self.board.latest(owner, panel=p) for p in PANELS}
        sent: dict[str, tuple] = {}
        t0 = time.time()
        first = True
        while True:
            values, active, changed = [], False, False
            for panel, n in PANELS.items():
                job = start[panel]
                newer = self.board.latest(owner, panel=panel)
                if job is None or (newer is not None and newer.id != job.id):  # the page started another: its event shows it
                    values += [gr.skip()] * n
                    continue
                key = (job.version, job.previews_version)
                if sent.get(panel) == key:
                    values += [gr.skip()] * n
                else:
                    out = list(self.render_panel(panel, job))
                    if panel in ("museum", "gan", "synth_fit") and sent.get(panel, (None, None))[1] == job.previews_version:
                        out[1] = gr.skip()  # the gallery only when its images changed
                    sent[panel], changed = key, True
                    values += out
                active |= not job.done
            if changed or first:
                yield tuple(values)
            first = False
            if not active or (limit_s is not None and time.time() - t0 > limit_s):
                return
            time.sleep(poll)

    def latest_job_id(self) -> int | None:
        rows = self.board.rows()
        return rows[0][0] if rows else None

    def jobs_view(self, job_id):
        rows = self.board.rows()
        if (job_id in (None, "", 0)) and rows:
            job_id = rows[0][0]
        return rows, self.board.log_text(job_id)


def _jobs_tab(studio: Studio) -> None:
    gr.Markdown("Every heavy job, newest first. One runs at a time; the others wait their turn. A job keeps running "
                "when its page is closed: reopen the page to follow it. Pick a row to read its log (the box follows "
                "the latest job until you pick one); Stop ends that job (yours only) after its current step.")
    table = gr.Dataframe(headers=JOB_COLUMNS, value=studio.board.rows, interactive=False, wrap=True)
    with gr.Row():
        job = gr.Number(label="Job", precision=0, value=studio.latest_job_id)
        stop = gr.Button("Stop this job", variant="stop")
    stopped = gr.Markdown()
    log = gr.Textbox(label="Log", lines=14, max_lines=30, autoscroll=True)

    def stop_job(job_id, request: gr.Request):
        return studio.stop_job(job_id, request)

    stop.click(stop_job, job, stopped, api_name="job_stop", queue=False, **LIGHT)

    def pick(evt: gr.SelectData):
        rows = studio.board.rows()
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return rows[row][0] if 0 <= row < len(rows) else None

    picked = gr.State(False)  # the user chose a job: the box stops following the latest one
    table.select(pick, None, job, api_visibility="private", queue=False).then(
        lambda: True, None, picked, api_visibility="private", queue=False)
    job.input(lambda v: v not in (None, "", 0), job, picked, api_visibility="private", queue=False)
    timer = gr.Timer(2.0)
    timer.tick(studio.jobs_view, job, [table, log], api_name="jobs", show_progress="hidden", **LIGHT)

    def follow_latest(current, chosen):
        latest = studio.latest_job_id()
        return gr.skip() if chosen or latest is None or latest == current else latest

    timer.tick(follow_latest, [job, picked], job, api_visibility="private", show_progress="hidden", **LIGHT)
    job.change(studio.jobs_view, job, [table, log], api_visibility="private", show_progress="hidden", **LIGHT)
