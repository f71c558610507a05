"""bench/stats.py: the benchmarks' intervals (fast: numpy only)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import stats  # noqa: E402


def test_bootstrap_interval_covers_the_mean_and_is_seeded():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=96).astype(float)
    a = stats.bootstrap_ci(np.mean, x, seed=3)
    b = stats.bootstrap_ci(np.mean, x, seed=3)
    assert a == b
    assert a["low"] <= a["value"] <= a["high"]
    assert a["value"] == pytest.approx(x.mean())
    # a binomial proportion's 95 % interval is about ±1.96·sqrt(p(1-p)/n)
    half = 1.96 * np.sqrt(x.mean() * (1 - x.mean()) / len(x))
    assert (a["high"] - a["low"]) / 2 == pytest.approx(half, rel=0.25)


def test_bootstrap_resamples_paired_arrays_together():
    x = np.arange(40, dtype=float)
    d = stats.bootstrap_ci(lambda a, b: float(np.mean(a - b)), x, x + 1.0)
    assert d["low"] == d["high"] == d["value"] == -1.0  # paired: the prompt-to-prompt spread cancels
    with pytest.raises(ValueError):
        stats.bootstrap_ci(lambda a, b: 0.0, x, x[:3])


def test_more_units_give_a_narrower_interval():
    rng = np.random.default_rng(1)
    small = stats.bootstrap_ci(np.mean, rng.integers(0, 2, 24).astype(float))
    large = stats.bootstrap_ci(np.mean, rng.integers(0, 2, 960).astype(float))
    assert large["high"] - large["low"] < small["high"] - small["low"]


def test_t_interval():
    t = stats.t_interval([0.1, 0.2, 0.3])
    assert t["mean"] == pytest.approx(0.2)
    assert t["high"] - t["mean"] == pytest.approx(4.303 * 0.1 / np.sqrt(3), rel=1e-3)
    clipped = stats.t_interval([0.0, 0.5], bounds=(0.0, 1.0))
    assert clipped["low"] == 0.0 and clipped["high"] == 1.0
    one = stats.t_interval([0.5])
    assert one["mean"] == 0.5 and one["low"] != one["low"]
    assert stats.t_interval([])["mean"] is None


def test_bits_round_trip_and_format():
    v = np.array([1.0, 0.0, np.nan, 1.0])
    assert stats.bits(v) == "10-1"
    np.testing.assert_array_equal(np.isnan(stats.unbits("10-1")), np.isnan(v))
    assert stats.fmt_ci({"value": 0.5, "low": 0.4, "high": 0.6}) == "0.50 [0.40, 0.60]"
    assert stats.fmt_ci({"mean": 0.5, "low": float("nan"), "high": float("nan")}) == "0.50"
