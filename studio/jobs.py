"""The web app's job board: every heavy piece of work (training, sampling, exporting data) is a Job.

A Job is registered as *queued* the moment a user asks for it, turns *running* when Gradio's
shared "heavy" slot reaches it, and ends *finished*, *stopped* or *failed*, keeping its log.
The work itself runs in a worker thread that talks to the engines through their two seams:

    job.progress(step, total, **info)   the engines' progress callback
    job.should_stop()                   the engines' should_stop callback (the Stop button)

`JobBoard.start(job, fn)` queues `fn(job)` on the board's own worker thread, which runs the
jobs one at a time in the order they were started; `JobBoard.follow(job)` is a generator for
Gradio event functions that yields the job whenever it changed, so a page streams progress;
`JobBoard.run(job, fn)` is both. A job belongs to the board, not to the request that asked for
it: closing the browser tab (Gradio cancels the event) ends only the following, never the job;
a reopened page follows it again. Only `request_stop` (the Stop buttons) stops a job.
No Gradio import here.
"""

from __future__ import annotations

import itertools
import queue
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


def duration(seconds: float | None) -> str:
    """A human duration: '40 s', '7 min', '1 h 05 min'."""
    if seconds is None:
        return ""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


@dataclass
class Job:
    id: int
    kind: str  # "museum", "generate", "gan", "synthetic"
    title: str
    owner: str  # the logged-in user that asked for it ("local" without --auth)
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
    previews_version: int = 0  # bumped when the previews change (a page redraws its gallery only then)
    panel: str = ""  # the web page's panel that shows it ("" for short jobs whose caller waits for the result)
    on_board: bool = False  # started: queued on the board's worker (or past it)
    estimate_s: float | None = None  # the predicted duration before it ran (shown while queued)
    error_obj: BaseException | None = field(default=None, repr=False)  # what fn raised, re-raised to followers
    _first: tuple[int, float] | None = field(default=None, repr=False)  # (step, time) of the first progress report
    _last: tuple[int, float] | None = field(default=None, repr=False)  # (step, time) of the latest one
    _ended: threading.Event = field(default_factory=threading.Event, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # --- the engines' seams -------------------------------------------------------------
    def progress(self, step: int, total: int, /, **info) -> None:
        now = time.time()
        with self._lock:
            self.step, self.total = int(step), int(total)
            # engines report some values (the loss) every few steps only: the last one stays shown
            self.info.update({k: v for k, v in info.items() if isinstance(v, (int, float, str))})
            if self._first is None or self.step < self._first[0]:
                self._first = (self.step, now)
            self._last = (self.step, now)
            self.version += 1

    # --- time ---------------------------------------------------------------------------
    def seconds_per_step(self) -> float | None:
        """Measured from the first progress report on (loading the model is not a step)."""
        if self._first is None or self._last is None or self._last[0] <= self._first[0]:
            return None
        return (self._last[1] - self._first[1]) / (self._last[0] - self._first[0])

    def remaining_s(self) -> float | None:
        """Seconds left: measured while running (after two steps), else the estimate."""
        if self.done:
            return None
        rate = self.seconds_per_step()
        if self.status == "running" and rate is not None and self.total:
            return rate * max(0, self.total - self.step)
        if self.estimate_s is not None:
            return self.estimate_s - ((time.time() - self.started) if self.started else 0.0)
        return None

    def should_stop(self) -> bool:
        return self._stop.is_set()

    # --- bookkeeping --------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()
        self.log("stop requested")
        if self.status == "queued" and self.on_board:  # waiting on the board: it will never start
            self._set_status("stopped")

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
            self.previews_version += 1
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
        if self.done:
            self._ended.set()

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
        left = self.remaining_s()
        if left is not None:
            measured = self.status == "running" and self.seconds_per_step() is not None
            text += (f", about {duration(left)} left" if measured or self.started else f", estimated {duration(left)}")
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
        self._heavy = threading.Lock()  # one job computes at a time
        self._queue: queue.Queue = queue.Queue()  # (job, fn) in the order they were started
        self._worker: threading.Thread | None = None

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
        if job is None or job.kind != kind or job.owner != owner or job.on_board or job.status not in ("queued", "stopped"):
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
        """Ask one job to stop (the jobs panel's Stop); only the user that asked for it may (without
        --auth everyone is "local")."""
        if job_id in (None, ""):
            return "pick a job in the table first"
        job = self.get(job_id)
        if job is None:
            return f"no job {job_id}"
        if job.done:
            return f"job {job.id} ({job.title}) already {job.status}"
        if job.owner != owner:
            return f"job {job.id} ({job.title}) belongs to {job.owner}; only they can stop it"
        job.request_stop()
        if job.status == "queued":
            return f"job {job.id} ({job.title}) will not start"
        return f"stop requested for job {job.id} ({job.title}); it stops after the current step"

    def fail(self, job: Job, message: str) -> None:
        job.error = message
        job._set_status("failed")

    def start(self, job: Job, fn: Callable[[Job], object]) -> Job:
        """Queue fn(job) on the board's worker: it runs after the jobs started before it, whatever
        becomes of the page or request that asked for it (a stopped queued job never runs)."""
        with self._lock:
            job.on_board = True
            self._queue.put((job, fn))
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="studio-jobs", daemon=True)
                self._worker.start()
        return job

    def _work(self) -> None:
        while True:
            job, fn = self._queue.get()
            try:
                self._execute(job, fn)
            finally:
                self._queue.task_done()

    def _execute(self, job: Job, fn: Callable[[Job], object]) -> None:
        if job.done:  # stopped while it waited
            return
        with self._heavy:
            if job.stop_requested:
                job._set_status("stopped")
                return
            job._set_status("running")
            try:
                job.result = fn(job)
                job._set_status("stopped" if job.stop_requested and _was_stopped(job.result) else "finished")
            except BaseException as err:  # noqa: BLE001 - everything ends up in the job's log
                job.error_obj = err
                job.log(traceback.format_exc())
                job.error = f"{type(err).__name__}: {err}" if not isinstance(err, (ValueError, FileNotFoundError,
                                                                                    FileExistsError)) else str(err)
                job._set_status("failed")

    def follow(self, job: Job, poll: float = 0.25, raise_error: bool = True) -> Iterator[Job]:
        """Yield the job whenever it changed, last when it ended; then re-raise what its work raised
        (raise_error). Closing the generator (a cancelled event) leaves the job running."""
        seen = -1
        while True:
            ended = job._ended.is_set()
            if job.version != seen:
                seen = job.version
                yield job
            if ended:
                break
            job._ended.wait(poll)
        if raise_error and job.error_obj is not None:
            raise job.error_obj

    def run(self, job: Job, fn: Callable[[Job], object], poll: float = 0.25) -> Iterator[Job]:
        """start + follow: run fn(job) on the board's worker and yield the job whenever it changed.

        A failure is logged (traceback included) and re-raised here after the final yield."""
        if job.done or job.stop_requested:
            if not job.done:
                job._set_status("stopped")
            yield job
            return
        self.start(job, fn)
        yield from self.follow(job, poll)

    def latest(self, owner: str | None = None, kind: str | None = None, panel: str | None = None) -> Job | None:
        """The newest job of `owner` (and `kind`, and shown in `panel`)."""
        hits = [j for j in self.jobs() if (owner is None or j.owner == owner) and (kind is None or j.kind == kind)
                and (panel is None or j.panel == panel)]
        return max(hits, key=lambda j: j.id) if hits else None

    def rows(self) -> list[list]:
        """The jobs panel's table, newest first."""
        out = []
        for j in sorted(self.jobs(), key=lambda j: -j.id):
            took = f"{((j.ended or time.time()) - j.started):.0f} s" if j.started else ""
            out.append([j.id, j.kind, j.title, j.status, j.progress_text(), j.owner, _clock(j.created), took])
        return out

    def log_text(self, job_id) -> str:
        job = self.get(job_id)
        if job is None:
            return "" if job_id in (None, "", 0) else f"no job {job_id}"
        with job._lock:
            return "\n".join(job.lines)
