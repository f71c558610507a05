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


def _forgetting_module():
    from bench import forgetting_report

    return forgetting_report


def test_forgetting_metrics_match_the_matrix_formulas():
    fg = _forgetting_module()
    rng = np.random.default_rng(2)
    P, T = 6, 3
    C = rng.integers(0, 2, size=(P, T, T)).astype(float)
    C[:, np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] = np.nan
    M = fg._matrix(C)  # nan above the diagonal, as the benchmark stores it
    assert fg.average_of(C) == pytest.approx(np.mean([np.mean(M[i, : i + 1]) for i in range(T)]))
    assert fg.forgetting_of(C) == pytest.approx(np.mean([max(M[j, j] - M[i, j] for i in range(j + 1, T)) for j in range(T - 1)]))
    assert fg.final_row_of(C) == pytest.approx(M[-1].mean())
    assert fg.diagonal_of(C) == pytest.approx(np.diagonal(M).mean())


def test_token_separation_counts_pairs_with_different_correct_labels():
    fg = _forgetting_module()
    names = ["a", "b", "c"]
    pred = np.array([[["a", "b", "c"]], [["a", "a", "c"]]], dtype=object)  # 2 prompts × 1 seed × 3 styles
    sep = fg.separation(pred, names)
    # prompt 0: all 3 pairs correct; prompt 1: only (a, c) of the three
    np.testing.assert_allclose(sep["per_prompt_correct"], [1.0, 1 / 3])
    np.testing.assert_allclose(sep["per_prompt_different"], [1.0, 2 / 3])
    assert sep["per_pair"] == {"a|b": 0.5, "a|c": 1.0, "b|c": 0.5}


def test_analyse_gives_intervals_and_a_paired_plasticity_gap():
    fg = _forgetting_module()

    class Args:
        bootstrap, seed = 200, 0

    def result(diag_bits):
        rows = [[diag_bits[0], None], ["1100", diag_bits[1]]]
        return {"per_prompt": {"shape": [2, 2], "style": rows, "content": [[r if r else None for r in row] for row in rows]}}

    results = {"separate": result(["1111", "1110"]), "full": result(["1111", "1110"]), "naive": result(["0000", "0000"])}
    fg.analyse(results, Args)
    assert results["full"]["plasticity_gap"]["value"] == 0.0
    assert results["full"]["plasticity_gap"]["low"] == results["full"]["plasticity_gap"]["high"] == 0.0  # paired
    assert results["naive"]["plasticity_gap"]["value"] == pytest.approx((1.0 + 0.75) / 2)
    assert results["full"]["diagonal"] == [1.0, 0.75]
    assert results["full"]["average_ci"]["low"] <= results["full"]["average_ci"]["value"] <= results["full"]["average_ci"]["high"]
    assert "plasticity_gap" not in results["separate"]
    # what the full method gains over another, paired over prompts (full: A = (1 + 0.625) / 2, F = 0.5;
    # naive: A = (0 + 0.25) / 2, F = -0.5)
    gains = results["naive"]["full_gains"]
    assert gains["average"]["value"] == pytest.approx(0.8125 - 0.125)
    assert gains["forgetting"]["value"] == pytest.approx(-0.5 - 0.5)
    assert "full_gains" not in results["full"]


def test_runs_under_several_training_seeds_are_summarised_and_paired_by_seed():
    fg = _forgetting_module()
    from bench.forgetting_report import over_runs, run_key

    class Args:
        bootstrap, seed = 200, 0

    def result(diag_bits, seed):
        rows = [[diag_bits[0], None], ["1100", diag_bits[1]]]
        return {"config": {"seed": seed},
                "per_prompt": {"shape": [2, 2], "style": rows, "content": [[r if r else None for r in row] for row in rows]}}

    runs = {"full": (["1111", "1110"], 0), "full@seed1": (["1111", "1100"], 1),
            "naive": (["0000", "0000"], 0), "naive@seed1": (["1100", "0000"], 1), "separate": (["1111", "1111"], 0)}
    results = {key: result(bits, seed) for key, (bits, seed) in runs.items()}
    assert [run_key(key.partition("@")[0], r) for key, r in results.items()] == list(results)
    fg.analyse(results, Args)
    # each ablation run is compared with the full method under its own training seed
    assert results["naive@seed1"]["full_gains"]["average"]["value"] == pytest.approx(
        fg.average_of(fg.per_prompt_arrays(results["full@seed1"])[0]) - fg.average_of(fg.per_prompt_arrays(results["naive@seed1"])[0]))
    report = over_runs(results, Args)
    assert set(report) == {"full", "naive"}  # separate ran under one seed only
    full = report["full"]
    assert full["seeds"] == [0, 1] and full["diagonal_per_run"] == [0.875, 0.75]
    assert full["diagonal"]["value"] == pytest.approx(0.8125)
    assert full["average"]["low"] <= full["average"]["value"] <= full["average"]["high"]
    gains = report["naive"]["full_gains"]["average"]
    each = [results[k]["full_gains"]["average"]["value"] for k in ("naive", "naive@seed1")]
    assert gains["value"] == pytest.approx(np.mean(each)) and report["naive"]["full_gains_per_run"]["average"] == pytest.approx(each, abs=1e-4)
    assert run_key("full@seed1", results["full@seed1"]) == "full@seed1"  # a merge of merges keys each run once
    # a run saved before a config field existed is read as that field's ABSENT_MEANS says
    results["naive@seed1"]["config"]["num_vectors"] = 1
    assert set(over_runs(results, Args)) == {"full", "naive"}
    # a variant is not another seed
    results["naive@seed1"]["config"]["num_vectors"] = 4
    with pytest.raises(ValueError, match="naive differ in num_vectors"):
        over_runs(results, Args)
    results["naive@seed1"]["config"]["num_vectors"] = 1
    results["naive@seed1"]["config"]["rank"] = 16
    with pytest.raises(ValueError, match="naive differ in rank, not only in the training seed"):
        over_runs(results, Args)


def test_context_diversity_compares_sets_at_the_real_shots_size():
    from bench.synthetic_protocols import context_diversity, entropy_bits

    assert entropy_bits(np.arange(8)[:, None]) == pytest.approx(3.0)
    labels = np.repeat(np.arange(3), 20)
    varied = np.stack([np.arange(60) % 8, np.arange(60) % 2, np.arange(60) % 9, np.arange(60) % 3], axis=1)
    same = np.zeros_like(varied)
    d = context_diversity(varied, labels, k=5)
    assert d["k"] == 5 and 2.5 < d["background_bits"] <= 3.0 and d["pose_bits"] > 2.5
    assert context_diversity(same, labels, k=5) == {"k": 5, "background_bits": 0.0, "pose_bits": 0.0}
    # 5 images a class from a 20-a-class set: the entropy of 15 images, not of 60
    assert d["background_bits"] < entropy_bits(varied[:, :1])


def test_the_committed_evaluator_reads_the_context_of_renderings():
    from bench.synthetic_protocols import CONTEXT_HEADS, read_contexts
    from generators import miniworld
    from generators.evaluators import load_evaluator

    evaluator = load_evaluator(device="cpu")
    attrs = [miniworld.sample_attributes(np.random.default_rng([5, i]), kinds=("bird",), scales=("medium", "large"))
             for i in range(24)]
    images = np.stack([np.asarray(miniworld.render(a, 64, seed=i), dtype=np.uint8) for i, a in enumerate(attrs)])
    read = read_contexts(evaluator, images, batch=10)
    for column, head in enumerate(CONTEXT_HEADS):
        truth = [evaluator.labels[head].index(getattr(a, head)) for a in attrs]
        assert (read[:, column] == truth).mean() >= 0.9, head


def test_synthetic_summary_pairs_each_seed_with_real_only_and_datadream():
    from bench.synthetic import summarize

    results = {5: {"real_only": {"per_seed": [0.10, 0.11, 0.12]},
                   "datadream": {"per_seed": [0.20, 0.30, 0.25]},
                   "bob": {"per_seed": [0.25, 0.35, 0.30]}}}
    summary = summarize(results)
    assert summary["bob_5shot"] == pytest.approx(0.30)
    # BOB is DataDream + 0.05 on every seed: the seed-to-seed spread cancels in the paired gain,
    # while the two accuracies' own intervals overlap
    gain = results[5]["bob"]["gain_vs_datadream"]
    assert gain["low"] == pytest.approx(0.05) and gain["high"] == pytest.approx(0.05)
    assert results[5]["bob"]["ci95"]["low"] < results[5]["datadream"]["ci95"]["high"]
    assert results[5]["datadream"]["gain_vs_real_only"]["mean"] == pytest.approx(0.14)
    assert "gain_vs_datadream" not in results[5]["datadream"]


def test_a_style_gets_the_same_images_whichever_styles_a_run_names(tmp_path):
    from bench.forgetting import DEFAULT_STYLES, style_folders

    whole = style_folders(tmp_path / "whole", DEFAULT_STYLES, 2, 0, 16)
    subset = style_folders(tmp_path / "subset", ["flat_outline", "blueprint"], 2, 0, 16)
    for style in ("flat_outline", "blueprint"):
        for name in ("000.png", "001.png", "000.txt"):
            assert (whole[style] / name).read_bytes() == (subset[style] / name).read_bytes(), (style, name)
    assert (whole["pixel_art"] / "000.txt").read_text() != (whole["flat_outline"] / "000.txt").read_text()


BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py") if "__main__" in p.read_text()))
def test_every_benchmark_script_answers_help(script):
    """A benchmark that no test runs still has to import and parse its arguments (a helper renamed
    in another script once broke bench/token_separation.py unnoticed)."""
    import subprocess

    done = subprocess.run([sys.executable, str(BENCH / script), "--help"], cwd=BENCH.parent, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
