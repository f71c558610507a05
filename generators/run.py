"""The run seam: how a long engine call talks to whoever drives it.

Every long-running engine function (a museum task, a GAN task, a synthetic fit or export,
pretraining, batched generation) takes one optional `run: Run`. The CLI fills it with a tqdm bar
and a Ctrl-C/SIGTERM flag, the web app with its job board's progress, Stop button and preview
gallery; a notebook can pass `Run(progress=print)` or nothing. The engine never knows who listens.

One meaning for each part:
- progress(done, total, **info): `done` units of this call's `total`, both ints, total > 0 and
  fixed for the call, done non-decreasing and equal to total when the call finishes. The unit is
  the engine's (training steps, images, or whole seconds of a time budget); `info` carries
  readings such as loss. Engines call it at most a few times a second.
- should_stop() -> bool: polled at every unit of work. When it turns true the engine writes
  what a resume needs (its checkpoint), returns a result marked stopped, and raises nothing.
- preview(step, images, captions): PIL images the engine sampled from the model being trained,
  every `preview_every` steps (0: never). The engine samples them itself without touching its
  training RNG, so a run with previews trains exactly as one without.
- log(message): one line for a human. Results go to the stores, never only to the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


def _ignore(*args, **kwargs) -> None:
    return None


def _never() -> bool:
    return False


@dataclass
class Run:
    progress: Callable[..., None] = _ignore
    should_stop: Callable[[], bool] = _never
    preview: Callable[..., None] = _ignore
    preview_every: int = 0
    log: Callable[[str], None] = _ignore

    def __post_init__(self):
        if self.preview_every < 0:
            raise ValueError(f"preview_every must be 0 (never) or more, got {self.preview_every}")
        # None means "not listening", as a caller building a Run from optional arguments expects
        self.progress = self.progress or _ignore
        self.should_stop = self.should_stop or _never
        self.preview = self.preview or _ignore
        self.log = self.log or _ignore

    def wants_preview(self, step: int) -> bool:
        """True on the steps where the engine should sample preview images."""
        return self.preview_every > 0 and self.preview is not _ignore and step % self.preview_every == 0


def as_run(run: Run | None) -> Run:
    """The engines' entry: no run means nobody listens."""
    return run if run is not None else Run()
