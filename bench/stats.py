"""Shared statistics for the benchmarks: intervals that tell a real effect from noise.

- `bootstrap_ci`: a percentile bootstrap over units (content prompts in bench/forgetting.py and
  bench/token_separation.py): resample the units with replacement, recompute the metric, take the
  2.5 and 97.5 percentiles. Seeded (default 1000 resamples), so a report is reproducible. Passing
  several arrays with the same first axis resamples them together (paired: the same prompts for two
  methods, so their difference's interval is not inflated by prompt-to-prompt variance).
- `t_interval`: mean and Student-t interval over a few independent runs (seeds in
  bench/synthetic.py): with 3 seeds a bootstrap over seeds cannot reach beyond the observed values,
  the t-interval can.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

N_RESAMPLES = 1000
LEVEL = 0.95


def bootstrap_indices(n_units: int, n_resamples: int = N_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Resampled unit indices, n_resamples × n_units (the same seed gives the same resamples)."""
    rng = np.random.default_rng([seed, 90210])
    return rng.integers(0, n_units, size=(n_resamples, n_units))


def percentile_interval(samples: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if not len(s):
        return float("nan"), float("nan")
    a = (1 - level) / 2
    return float(np.quantile(s, a)), float(np.quantile(s, 1 - a))


def bootstrap_ci(statistic: Callable[..., float], *units: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = 0,
                 level: float = LEVEL) -> dict:
    """{"value", "low", "high", "resamples"}: statistic(*units) and its percentile bootstrap interval,
    resampling the first axis of every array in `units` together (they must share it)."""
    arrays = [np.asarray(u) for u in units]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError("bootstrap_ci: the arrays must share their first axis (the resampled units)")
    value = float(statistic(*arrays))
    if n == 0:
        return {"value": value, "low": float("nan"), "high": float("nan"), "resamples": 0}
    idx = bootstrap_indices(n, n_resamples, seed)
    samples = [statistic(*(a[i] for a in arrays)) for i in idx]
    low, high = percentile_interval(samples, level)
    return {"value": value, "low": low, "high": high, "resamples": n_resamples}


def t_quantile(df: int, level: float = LEVEL) -> float:
    """The two-sided Student-t quantile (scipy when installed, else a table for 95 %)."""
    try:
        from scipy import stats

        return float(stats.t.ppf(1 - (1 - level) / 2, df))
    except ImportError:  # pragma: no cover - scipy ships with the test extras
        if level != 0.95:
            raise
        table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
        return table.get(df, 1.96 if df > 30 else 2.04)


def t_interval(values: Sequence[float], level: float = LEVEL, bounds: tuple[float, float] | None = None) -> dict:
    """{"mean", "low", "high", "n", "std"} over independent runs; a single run has no interval (nan).
    bounds: clip the interval to a metric's range (an accuracy's [0, 1])."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    n = len(v)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0, "std": None}
    mean = float(v.mean())
    if n == 1:
        return {"mean": mean, "low": float("nan"), "high": float("nan"), "n": 1, "std": 0.0}
    std = float(v.std(ddof=1))
    half = t_quantile(n - 1, level) * std / math.sqrt(n)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return {"mean": mean, "low": low, "high": high, "n": n, "std": std}


def fmt_ci(d: dict | None, digits: int = 2) -> str:
    """'0.34 [0.29, 0.40]' from a bootstrap_ci or t_interval dict."""
    if not d:
        return "-"
    value = d.get("value", d.get("mean"))
    if value is None:
        return "-"
    low, high = d.get("low"), d.get("high")
    if low is None or high is None or low != low:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def bits(values) -> str:
    """A 0/1 vector as a compact string for JSON ('0110...'); nan or None as '-'."""
    out = []
    for v in np.asarray(values, dtype=np.float64).ravel():
        out.append("-" if v != v else ("1" if v else "0"))
    return "".join(out)


def unbits(text: str) -> np.ndarray:
    return np.asarray([np.nan if c == "-" else float(c) for c in text], dtype=np.float64)
