"""What every tab of the web app shares: the limits on what the browser may send, the page's error
message (`page_errors`, the one place an exception becomes one), the job-board glue every heavy event
goes through (`StudioBase`: register, claim, run and follow a job; this machine's timings) and the
small HTML pieces of a job's status."""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from generators.errors import UserError  # the tabs raise it; studio.webapp re-exports it
from generators.files import atomic_write_json
from studio.jobs import Job, JobBoard
from styles.folder import IMAGE_SUFFIXES  # noqa: F401 - the tabs accept what the engines read

if TYPE_CHECKING:
    from studio.webapp.app import Studio

log = logging.getLogger("studio.webapp")

# --- limits on what the browser may send --------------------------------------------------

CAPTION_SUFFIXES = (".txt",)
MAX_FILE_BYTES = 20 * 2**20  # per uploaded file
MAX_UPLOAD_BYTES = 200 * 2**20  # per request
MAX_STYLE_FILES = 100  # 50 images + their captions
MAX_ZIP_MEMBERS = 2000
MAX_ZIP_BYTES = 500 * 2**20  # uncompressed
MAX_BATCH = 16
MAX_PROMPT = 1000
LAUNCH_MAX_FILE_SIZE = "25mb"
# Heavy work is serialized by the job board (studio.jobs: one job computes at a time, the rest wait in
# its queue, and a job outlives the request that started it); the events only start and follow jobs.
HEAVY = dict(concurrency_limit=None)
LIGHT = dict(concurrency_limit=None)
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
CSS = """
.studio-table table {border-collapse: collapse; width: 100%;}
.studio-table th, .studio-table td {padding: 4px 8px; border-bottom: 1px solid #8884; text-align: left;}
.studio-table img {width: 48px; height: 48px; image-rendering: pixelated; border-radius: 4px;}
.studio-heat td {text-align: center; min-width: 3.5em;}
"""


def studio_home_dir(studio_home=None) -> Path:
    from styles.home import studio_home as resolve  # the CLI's rule, once

    return resolve(studio_home)


def _owner(request: gr.Request | None) -> str:
    """Who asked: the logged-in user name (with --auth), else "local" (everyone who can reach the page)."""
    return (getattr(request, "username", None) if request is not None else None) or "local"


def _bar(step: int, total: int, width: int = 24) -> str:
    if not total:
        return ""
    filled = int(round(width * min(step, total) / total))
    return "█" * filled + "░" * (width - filled)


def _status_md(job: Job) -> str:
    lines = [f"**{html.escape(job.summary().splitlines()[0])}**"]
    if job.total:
        lines.append(f"`{_bar(job.step, job.total)}` {html.escape(job.progress_text())}")
    if job.error:
        lines.append(html.escape(job.error))
    recent = job.lines[-3:]
    if recent:
        lines.append("<small>" + "<br>".join(html.escape(x) for x in recent) + "</small>")
    return "\n\n".join(lines)


# The CLI's user errors (studio/cli.py): a plain ValueError, from inside torch say, is a bug.
USER_ERRORS = (UserError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)


def _user_error(err: BaseException) -> gr.Error:
    """The page's message for an exception: a user error as is, a bug with its type and where to read more."""
    if isinstance(err, gr.Error):
        return err
    if isinstance(err, USER_ERRORS):
        return gr.Error(str(err))
    return gr.Error(f"{type(err).__name__}: {err} (the job's log in the Jobs tab has the details)")


@contextmanager
def page_errors(board: JobBoard | None = None, job: Job | None = None):
    """The one error wrapper of the web app's events: an exception inside becomes the page's error
    message (gr.Error). A user error (UserError, a missing, existing or forbidden file) shows
    as is; anything else is a bug: its traceback goes to the server's log (and to `job`'s), and the page
    names its type. With `job` (a claimed job whose input was refused before it ran), the job is
    marked failed with the message, so the Jobs tab shows why."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - every failure becomes a message; bugs keep their traceback
        if not isinstance(err, (gr.Error,) + USER_ERRORS):
            log.error("a web app event failed", exc_info=err)
            if job is not None:
                job.log(traceback.format_exc())
        if job is not None and board is not None:
            board.fail(job, str(err))
        raise _user_error(err) from None


def _img_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


class StudioBase:
    """The app's state (folders, the job board) and the glue every heavy event goes through."""

    def __init__(self, museum_dir=None, base=None, studio_home=None, device: str = "cpu", gan_base=None):
        self.home = studio_home_dir(studio_home)
        self.gan_base = str(gan_base) if gan_base else None
        from styles.home import default_museum_dir  # the CLI's default museum, once

        self.museum_dir = Path(museum_dir).expanduser().resolve() if museum_dir else default_museum_dir(self.home)
        self.base = str(base) if base else None
        self.device = device
        for sub in ("uploads", "outputs", "exports", "logs", "tmp", "gan", "synthetic"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        self.board = JobBoard(self.home / "logs")
        self._pipe = (None, None)  # (key, pipeline) for generation
        self._evaluator = None

    @property
    def allowed_paths(self) -> list[str]:
        return [str(self.home / "outputs"), str(self.home / "exports")]

    def run_job(self, job: Job, fn, render):
        """Stream render(job) while fn(job) runs; turn failures into messages for the page."""
        with page_errors():
            for j in self.board.run(job, fn):
                yield render(j)

    def run_sync(self, kind: str, title: str, request, fn):
        """A short heavy job (sampling, previews): registered, run under the heavy lock, its result returned."""
        job = self.board.submit(kind, title, _owner(request))
        for _ in self.run_job(job, fn, lambda j: None):
            pass
        return job.result

    def register(self, kind: str, title: str, request: gr.Request | None = None) -> int:
        return self.board.submit(kind, title, _owner(request)).id

    def stop_job(self, job_id, request: gr.Request | None = None) -> str:
        return self.board.stop_job(job_id, _owner(request))

    def stop(self, kind: str, request: gr.Request | None = None) -> str:
        hit = self.board.stop(_owner(request), kind)
        if not hit:
            return "nothing of yours is running or queued here"
        return "stop requested for " + ", ".join(f"job {j.id} ({j.title})" for j in hit) + "; it stops after the current step"

    def evaluator(self):
        if self._evaluator is None:
            try:
                from generators.evaluators import load_evaluator

                self._evaluator = load_evaluator(device="cpu")
            except FileNotFoundError:
                self._evaluator = False
        return self._evaluator or None

    @property
    def timings_file(self) -> Path:
        return self.home / "logs" / "timings.json"

    def timings(self) -> dict:
        try:
            data = json.loads(self.timings_file.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def record_timing(self, kind: str, s_per_step: float, batch: int, overhead_s: float, source: str) -> None:
        """Remember this machine's speed for `kind` (seconds per step at `batch`, plus the fixed cost of
        loading and scoring) in STUDIO_HOME/logs/timings.json: the next estimate starts from it."""
        data = self.timings()
        data[f"{kind}:{self.device}"] = {"s_per_step": round(float(s_per_step), 4), "batch": int(batch),
                                         "overhead_s": round(max(0.0, float(overhead_s)), 1), "source": source,
                                         "when": time.strftime("%Y-%m-%d %H:%M")}
        atomic_write_json(self.timings_file, data, indent=1, newline=False)

    def record_job_timing(self, job: Job, batch: int) -> None:
        """A job that measured at least 3 steps records its speed (the steps after its first)."""
        rate = job.seconds_per_step()
        if rate is None or job._first is None or job.step - job._first[0] < 3 or not job.started:
            return
        overhead = (time.time() - job.started) - rate * (job.step - (job.info.get("resumed_from") or 0))
        self.record_timing(job.kind, rate, batch, overhead, f"job {job.id}")

    def estimate(self, kind: str, steps, batch) -> tuple[float, dict] | None:
        """(seconds, the timing it comes from) for `steps` steps at `batch`, or None if never measured here.
        Seconds per step scale with the batch size (close to linear on a CPU)."""
        t = self.timings().get(f"{kind}:{self.device}")
        try:
            steps, batch = int(steps), int(batch)
            per_step = float(t["s_per_step"]) * batch / max(1, int(t["batch"]))
            return per_step * steps + float(t.get("overhead_s", 0)), dict(t, per_step=per_step)
        except (TypeError, KeyError, ValueError):
            return None


def _registrar(studio: Studio, kind: str, title: str):
    """A cheap private event that shows the job as queued before the heavy slot reaches it."""

    def register(label, request: gr.Request):
        return studio.register(kind, title.format(label), request)

    return register


def _bind_stop(studio: Studio, btn, kind: str, status, api_name: str):
    def stop(request: gr.Request):
        return studio.stop(kind, request)

    btn.click(stop, None, status, api_name=api_name, queue=False, **LIGHT)
