"""The CLI's side of the `progress(step, total)` seam: a tqdm bar on stderr."""

from __future__ import annotations

from tqdm import tqdm


class TqdmProgress:
    """Callable progress(step, total, **info) that drives one tqdm bar."""

    def __init__(self, desc: str):
        self.desc = desc
        self.bar = None

    def __call__(self, step: int, total: int, /, **info) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.desc, dynamic_ncols=True)
        self.bar.total = total
        if info:
            self.bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in info.items()}, refresh=False)
        # update() redraws at most every mininterval, so fast loops do not flood a log file
        self.bar.update(step - self.bar.n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
