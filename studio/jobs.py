"""The web app's job board: every heavy piece of work (training, sampling, exporting data) is a Job.

A Job is registered as *queued* the moment a user asks for it, turns *running* when Gradio's
shared "heavy" slot reaches it, and ends *finished*, *stopped* or *failed*, keeping its log.
The work itself runs in a worker thread that talks to the engines through their two seams:

    job.progress(step, total, **info)   the engines' progress callback
    job.should_stop()                   the engines' should_stop callback (the Stop button)

`JobBoard.run(job, fn)` is a generator for Gradio event functions: it starts `fn(job)` in a
thread and yields the job whenever it changed, so the page streams progress; a lock makes
sure only one heavy job computes at a time even if Gradio frees its slot early (a closed
browser tab cancels the event: the job is then asked to stop). No Gradio import here.
"""

from __future__ import annotations

import itertools
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

STATUSES = ("queued", "running", "finished", "stopped", "failed")


def _was_stopped(result) -> bool:
    """Whether a job's result says its work was cut short: engines return a manifest dict that holds
    "stopped" only when interrupted, or an object with .stopped; any other result is taken as
    stopped, as asked."""
    if isinstance(result, dict):
        return bool(result.get("stopped", False))
    return bool(getattr(result, "stopped", True))


def _clock(t: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if t else ""


@dataclass
class Job:
    id: int
    kind: str  # "museum", "generate", "gan", "synthetic"
    title: str
    owner: str  # the Gradio session (or user) that asked for it
    status: str = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    step: int = 0
    total: int = 0
    info: dict = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    previews: list = field(default_factory=list)  # PIL images or file paths to show while running
    outputs: list = field(default_factory=list)  # files the job wrote
    result: object = None
    error: str = ""
    version: int = 0  # bumped on every change: the streaming loop yields only when it moved
    log_file: Path | None = None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # --- the engines' seams -------------------------------------------------------------
    def progress(self, step: int, total: int, **info) -> None:
        with self._lock:
            self.step, self.total = int(step), int(total)
            self.info = {k: v for k, v in info.items() if isinstance(v, (int, float, str))}
            self.version += 1

    def should_stop(self) -> bool:
        return self._stop.is_set()

    # --- bookkeeping --------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()
        self.log("stop requested")

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def done(self) -> bool:
        return self.status in ("finished", "stopped", "failed")

    def log(self, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        with self._lock:
            for line in str(message).rstrip().splitlines() or [""]:
                self.lines.append(f"{stamp} {line}")
            del self.lines[:-2000]
            self.version += 1
        if self.log_file is not None:
            try:
                with open(self.log_file, "a") as fh:
                    fh.write(f"{stamp} {message}\n")
            except OSError:
                pass

    def set_previews(self, previews: list) -> None:
        with self._lock:
            self.previews = list(previews)
            self.version += 1

    def add_output(self, path) -> None:
        with self._lock:
            self.outputs.append(path)
            self.version += 1

    def _set_status(self, status: str) -> None:
        with self._lock:
            self.status = status
            if status == "running":
                self.started = time.time()
            elif status in ("finished", "stopped", "failed"):
                self.ended = time.time()
            self.version += 1
        self.log(status if not self.error else f"{status}: {self.error}")

    def progress_text(self) -> str:
        if not self.total:
            return ""
        extra = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.info.items())
        return f"{self.step}/{self.total}" + (f" ({extra})" if extra else "")

    def summary(self) -> str:
        """One line for the page: what, where it is, and how long it took."""
        took = ""
        if self.started:
            took = f", {((self.ended or time.time()) - self.started):.0f} s"
        text = f"job {self.id} ({self.title}): {self.status}"
        if self.status == "queued":
            text += " - waiting for the running job to finish"
        if self.progress_text():
            text += f" - step {self.progress_text()}"
        text += took
        if self.error:
            text += f"\n\n{self.error}"
        return text


class JobBoard:
    """All jobs of one app, newest last; `run` executes one under the heavy lock."""

    def __init__(self, log_dir: Path | None = None, keep: int = 200):
        self.log_dir = Path(log_dir) if log_dir else None
        self.keep = keep
        self._jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._heavy = threading.Lock()

    def submit(self, kind: str, title: str, owner: str = "") -> Job:
        with self._lock:
            job = Job(next(self._ids), kind, title, owner)
            if self.log_dir is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                job.log_file = self.log_dir / f"job-{time.strftime('%Y%m%d-%H%M%S')}-{job.id}-{kind}.log"
            self._jobs[job.id] = job
            for old in sorted(self._jobs)[: max(0, len(self._jobs) - self.keep)]:
                if self._jobs[old].done:
                    del self._jobs[old]
        job.log(f"queued: {title}")
        return job

    def get(self, job_id) -> Job | None:
        try:
            return self._jobs.get(int(job_id))
        except (TypeError, ValueError):
            return None

    def claim(self, job_id, kind: str, title: str, owner: str) -> Job:
        """The job registered for this request when it was queued, or a new one (API callers)."""
        job = self.get(job_id)
        if job is None or job.kind != kind or job.status != "queued" or job.owner != owner:
            return self.submit(kind, title, owner)
        job.title = title
        return job

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def stop(self, owner: str | None = None, kind: str | None = None) -> list[Job]:
        """Ask every unfinished job of `owner` (and `kind`) to stop; queued ones never start."""
        hit = [j for j in self.jobs() if not j.done and (owner is None or j.owner == owner) and (kind is None or j.kind == kind)]
        for j in hit:
            j.request_stop()
        return hit

    def stop_job(self, job_id, owner: str) -> str:
        """Ask one job to stop (the jobs panel's Stop); only the session that asked for it may."""
        if job_id in (None, ""):
            return "pick a job in the table first"
        job = self.get(job_id)
        if job is None:
            return f"no job {job_id}"
        if job.done:
            return f"job {job.id} ({job.title}) already {job.status}"
        if job.owner != owner:
            return f"job {job.id} ({job.title}) belongs to another session; only its owner can stop it"
        job.request_stop()
        if job.status == "queued":
            return f"job {job.id} ({job.title}) will not start"
        return f"stop requested for job {job.id} ({job.title}); it stops after the current step"

    def fail(self, job: Job, message: str) -> None:
        job.error = message
        job._set_status("failed")

    def run(self, job: Job, fn: Callable[[Job], object], poll: float = 0.25) -> Iterator[Job]:
        """Run fn(job) in a worker thread; yield the job whenever it changed, last when it ended.

        A failure is logged (traceback included) and re-raised here after the final yield."""
        if job.stop_requested:
            job._set_status("stopped")
            yield job
            return
        done = threading.Event()
        box: dict = {}

        def target() -> None:
            with self._heavy:
                if job.stop_requested:
                    job._set_status("stopped")
                    done.set()
                    return
                job._set_status("running")
                try:
                    box["result"] = fn(job)
                    job.result = box["result"]
                    job._set_status("stopped" if job.stop_requested and _was_stopped(box["result"]) else "finished")
                except BaseException as err:  # noqa: BLE001 - everything ends up in the job's log
                    box["error"] = err
                    job.log(traceback.format_exc())
                    job.error = f"{type(err).__name__}: {err}" if not isinstance(err, (ValueError, FileNotFoundError,
                                                                                        FileExistsError)) else str(err)
                    job._set_status("failed")
                finally:
                    done.set()

        worker = threading.Thread(target=target, name=f"studio-job-{job.id}", daemon=True)
        worker.start()
        seen = -1
        finished = False
        try:
            while not done.wait(poll):
                if job.version != seen:
                    seen = job.version
                    yield job
            finished = True
        finally:
            if not finished:  # the event was cancelled (tab closed, cancels=...): stop the work too
                job.request_stop()
        if "error" in box:
            yield job
            raise box["error"]
        yield job

    def rows(self) -> list[list]:
        """The jobs panel's table, newest first."""
        out = []
        for j in sorted(self.jobs(), key=lambda j: -j.id):
            took = f"{((j.ended or time.time()) - j.started):.0f} s" if j.started else ""
            out.append([j.id, j.kind, j.title, j.status, j.progress_text(), j.owner[:8], _clock(j.created), took])
        return out

    def log_text(self, job_id) -> str:
        job = self.get(job_id)
        if job is None:
            return "" if job_id in (None, "", 0) else f"no job {job_id}"
        with job._lock:
            return "\n".join(job.lines)
