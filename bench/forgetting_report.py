"""The forgetting benchmark's report (bench/forgetting.py runs the protocol): the metrics with their 95 %
bootstrap intervals over content prompts, token separation, the plasticity gap to `separate`, the
table printed at the end and the heatmap. Reads only the results' JSON, so `--merge` recomputes it all."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np

from bench import stats
from generators.museum.config import MuseumConfig

SEPARATION_TARGET = 0.80  # issue 34: token pairs told apart, correctly, on the same prompt and seed


def metric_ci(statistic, *per_prompt, args=None, **_) -> dict:
    return stats.bootstrap_ci(statistic, *per_prompt, n_resamples=args.bootstrap, seed=args.seed)


def _matrix(C: np.ndarray) -> np.ndarray:
    """prompts × T × T per-prompt accuracies (nan above the diagonal) -> the T × T matrix."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the empty cells above the diagonal stay nan
        return np.nanmean(C, axis=0)


def average_of(C: np.ndarray) -> float:
    M = _matrix(C)
    return float(np.mean([np.mean(M[i, : i + 1]) for i in range(M.shape[0])]))


def forgetting_of(C: np.ndarray) -> float:
    M = _matrix(C)
    T = M.shape[0]
    return float(np.mean([max(M[j, j] - M[i, j] for i in range(j + 1, T)) for j in range(T - 1)])) if T > 1 else 0.0


def final_row_of(C: np.ndarray) -> float:
    return float(np.mean(_matrix(C)[-1]))


def diagonal_of(C: np.ndarray) -> float:
    return float(np.mean(np.diagonal(_matrix(C))))


def separation(pred: np.ndarray, names: list[str]) -> dict:
    """Token separation at one model: pred is prompts × seeds × styles (the style label of each
    style's image for the same prompt and seed). For every unordered pair of tokens, the share of
    (prompt, seed) whose two images get different labels that are both the style asked for (both
    correct implies different); also the share that merely differ. Per prompt, for the bootstrap."""
    P, S, T = pred.shape
    pairs = list(itertools.combinations(range(T), 2))
    if not pairs:
        return {"per_prompt_correct": np.zeros(P), "per_prompt_different": np.zeros(P), "per_pair": {}}
    correct = np.stack([pred[:, :, t] == names[t] for t in range(T)], -1)
    both = np.stack([correct[:, :, a] & correct[:, :, b] for a, b in pairs], -1).astype(float)  # P × S × pairs
    diff = np.stack([pred[:, :, a] != pred[:, :, b] for a, b in pairs], -1).astype(float)
    return {"per_prompt_correct": both.mean((1, 2)), "per_prompt_different": diff.mean((1, 2)),
            "per_pair": {f"{names[a]}|{names[b]}": round(float(both[:, :, n].mean()), 4) for n, (a, b) in enumerate(pairs)}}


def separation_report(pred: np.ndarray, names: list[str], args) -> dict | None:
    if len(names) < 2:  # one style: no pair of tokens to tell apart
        return None
    sep = separation(pred, names)
    mean = lambda x: float(np.mean(x))  # noqa: E731
    return {"correct_and_different": metric_ci(mean, sep["per_prompt_correct"], args=args),
            "different": metric_ci(mean, sep["per_prompt_different"], args=args),
            "target": SEPARATION_TARGET, "pairs": len(sep["per_pair"]), "per_pair": sep["per_pair"]}


def per_prompt_arrays(r: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """A result's stored 0/1 verdicts as prompts × T × T arrays (seeds averaged; nan not learnt yet)."""
    pp = r.get("per_prompt")
    if not pp:
        return None
    P, S = pp["shape"]
    T = len(pp["style"])

    def arr(rows):
        out = np.full((P, T, T), np.nan)
        for i in range(T):
            for j in range(T):
                if rows[i][j] is not None:
                    out[:, i, j] = stats.unbits(rows[i][j]).reshape(P, S).mean(1)
        return out

    return arr(pp["style"]), arr(pp["content"])


def analyse(results: dict, args) -> None:
    """Intervals for every method with per-prompt verdicts, and each method's plasticity gap to
    `separate` (paired over prompts: the same prompts and seeds), in place."""
    arrays = {m: per_prompt_arrays(r) for m, r in results.items()}
    ci = lambda f, *a: metric_ci(f, *a, args=args)  # noqa: E731
    for m, r in results.items():
        if arrays[m] is None:
            continue
        C, K = arrays[m]
        r["average_ci"], r["forgetting_ci"], r["content_ci"] = ci(average_of, C), ci(forgetting_of, C), ci(final_row_of, K)
        r["diagonal"] = np.diagonal(_matrix(C)).round(4).tolist()
        r["diagonal_ci"] = ci(diagonal_of, C)
    for m, r in results.items():
        method, at, seed = m.partition("@seed")
        sep = arrays.get("separate" + at + seed) or arrays.get("separate")  # under the same training seed where run
        if method == "separate" or sep is None or arrays[m] is None or arrays[m][0].shape != sep[0].shape:
            continue
        # plasticity gap: how much less each style is learnt right after its task than by a fresh LoRA
        r["plasticity_gap"] = ci(lambda a, b: diagonal_of(a) - diagonal_of(b), sep[0], arrays[m][0])
        r["plasticity_gap_per_style"] = (np.diagonal(_matrix(sep[0])) - np.diagonal(_matrix(arrays[m][0]))).round(4).tolist()
    for m, r in results.items():
        method, at, seed = m.partition("@seed")
        full = arrays.get("full" + at + seed)  # the full method under the same training seed
        if method == "full" or full is None or arrays[m] is None or arrays[m][0].shape != full[0].shape:
            continue
        # What the full method gains over this one (paired over the same prompts): for an ablation,
        # the switched-off term's contribution (for weight_reg, a term added: what leaving it out
        # gains). Positive is better for the full method in each.
        (C, K), (Cf, Kf) = arrays[m], full
        r["full_gains"] = {
            "average": ci(lambda a, b: average_of(a) - average_of(b), Cf, C),
            "forgetting": ci(lambda a, b: forgetting_of(a) - forgetting_of(b), C, Cf),  # less forgetting
            "content": ci(lambda a, b: final_row_of(a) - final_row_of(b), Kf, K),
        }


def run_key(method: str, result: dict) -> str:
    """A result's key in a merge: the method, with "@seedS" for a training seed other than 0
    (MuseumConfig.seed: the LoRA's start, the noise and the replay prompts), so that runs of one
    method under several training seeds sit side by side."""
    method = method.partition("@seed")[0]  # a merge of merges keys each run once
    seed = (result.get("config") or {}).get("seed", 0)
    return method if seed == 0 else f"{method}@seed{seed}"


def over_runs(results: dict, args) -> dict:
    """Each method trained under several seeds (keys "m", "m@seedS"): every figure as the mean over
    its runs, with a 95 % bootstrap interval that resamples the content prompts (the same prompts
    in every run) and holds the runs fixed, and each run's value, so the spread between training
    runs is in view beside it; and what the full method gains over it, each run compared with the
    full method's run under the same training seed (mean over seeds, the same prompt-only interval,
    and each seed's gain). Runs of one method that differ in any config field but the seed are
    refused: they are variants, not seeds. Needs two runs or more."""
    groups: dict[str, dict[str, tuple]] = {}
    configs: dict[str, dict] = {}
    for key, r in results.items():
        arrays = per_prompt_arrays(r)
        if arrays is not None:
            method, _, seed = key.partition("@seed")
            groups.setdefault(method, {})[seed or "0"] = arrays
            # read as the museum reads a saved config: a field added since means what ABSENT_MEANS says
            config = {k: v for k, v in MuseumConfig.from_dict(r.get("config") or {}).to_dict().items() if k != "seed"}
            if configs.setdefault(method, config) != config:
                differ = sorted(k for k in config.keys() | configs[method].keys() if config.get(k) != configs[method].get(k))
                raise ValueError(f"runs of {method} differ in {', '.join(differ)}, not only in the training seed: "
                                 "merge variants under their own --json, not as seeds")
    ci = lambda f, *a: metric_ci(f, *a, args=args)  # noqa: E731
    mean_of = lambda f: lambda *Cs: float(np.mean([f(C) for C in Cs]))  # noqa: E731
    report = {}
    for method, runs in groups.items():
        if len(runs) < 2 or len({a[0].shape for a in runs.values()}) > 1:
            continue
        seeds = sorted(runs, key=int)
        C = [runs[s][0] for s in seeds]
        K = [runs[s][1] for s in seeds]
        row = {"seeds": [int(s) for s in seeds]}
        for name, f, arrays in (("average", average_of, C), ("forgetting", forgetting_of, C),
                                ("diagonal", diagonal_of, C), ("content", final_row_of, K)):
            row[name] = ci(mean_of(f), *arrays)
            row[f"{name}_per_run"] = [round(f(a), 4) for a in arrays]
        full = groups.get("full", {})
        if method != "full" and all(s in full for s in seeds):
            n = len(seeds)
            pair = lambda f, sign: lambda *a: float(np.mean([sign * (f(a[i]) - f(a[n + i])) for i in range(n)]))  # noqa: E731
            Cf, Kf = [full[s][0] for s in seeds], [full[s][1] for s in seeds]
            row["full_gains"] = {"average": ci(pair(average_of, 1), *Cf, *C),
                                 "forgetting": ci(pair(forgetting_of, -1), *Cf, *C),  # less forgetting
                                 "content": ci(pair(final_row_of, 1), *Kf, *K)}
            row["full_gains_per_run"] = {
                "average": [round(average_of(a) - average_of(b), 4) for a, b in zip(Cf, C)],
                "forgetting": [round(forgetting_of(b) - forgetting_of(a), 4) for a, b in zip(Cf, C)],
                "content": [round(final_row_of(a) - final_row_of(b), 4) for a, b in zip(Kf, K)]}
        report[method] = row
    return report


def print_over_runs(report: dict) -> None:
    if not report:
        return
    f = stats.fmt_ci
    print("\nOver training seeds (mean of the runs [95 % bootstrap over prompts, the runs held fixed]; each run's value after it):")
    print("\n| method | seeds | Average | Forgetting | diagonal | content |\n|---|---|---|---|---|---|")
    for m, r in report.items():
        cells = [f"{f(r[k])} ({', '.join(f'{v:.2f}' for v in r[k + '_per_run'])})" for k in ("average", "forgetting", "diagonal", "content")]
        print(f"| {m} | {', '.join(map(str, r['seeds']))} | " + " | ".join(cells) + " |")
    gains = {m: r["full_gains"] for m, r in report.items() if r.get("full_gains")}
    if gains:
        print("\n| full against, seed by seed | Average (full − it) | Forgetting (it − full) | content (full − it) |\n|---|---|---|---|")
        for m, g in gains.items():
            each = report[m]["full_gains_per_run"]
            print(f"| {m} | " + " | ".join(f"{f(g[k])} ({', '.join(f'{v:+.2f}' for v in each[k])})"
                                           for k in ("average", "forgetting", "content")) + " |")


def print_table(results: dict, base_ref: dict | None = None) -> None:
    """Each method's metrics with their 95 % bootstrap intervals over prompts."""
    f = stats.fmt_ci
    print("\n| method | diagonal | Average | Forgetting | content | plasticity gap vs separate | token separation | plain kind | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for m, r in results.items():
        diag = " ".join(f"{v:.2f}" for v in r.get("diagonal", []))
        sep = (r.get("token_separation") or {}).get("correct_and_different")
        print(f"| {m} | {diag} | {f(r.get('average_ci')) if r.get('average_ci') else format(r['average'], '.2f')} "
              f"| {f(r.get('forgetting_ci')) if r.get('forgetting_ci') else format(r['forgetting'], '.2f')} "
              f"| {f(r.get('content_ci')) if r.get('content_ci') else format(r['content_accuracy'], '.2f')} "
              f"| {f(r.get('plasticity_gap'))} | {f(sep)} | {f(r.get('plain_kind_ci')) if r.get('plain_kind_ci') else '-'} | {r['seconds']} |")
    if base_ref:
        print(f"\nthe bare base on the same prompts and seeds: kind {f(base_ref['kind'])}, judged plain {f(base_ref['plain_style'])}")
    gains = {m: r["full_gains"] for m, r in results.items() if r.get("full_gains")}
    if gains:
        print("\nWhat the full method gains over each (paired over prompts; for an ablation, its term's contribution; "
              "for weight_reg, what leaving the weight term out gains):")
        print("\n| against | Average (full − it) | Forgetting (it − full) | content (full − it) |\n|---|---|---|---|")
        for m, g in gains.items():
            print(f"| {m} | {f(g['average'])} | {f(g['forgetting'])} | {f(g['content'])} |")


def heatmap(results: dict, styles, path: Path) -> None:
    """One accuracy matrix per method, side by side (PIL only: no plotting dependency)."""
    from PIL import Image, ImageDraw

    cell, pad = 28, 16
    T = len(styles)
    width = len(results) * (T * cell + pad) + pad
    img = Image.new("RGB", (width, T * cell + 3 * pad + 14), "white")
    draw = ImageDraw.Draw(img)
    for m, (method, r) in enumerate(results.items()):
        x0 = pad + m * (T * cell + pad)
        draw.text((x0, 4), f"{method} A{r['average']:.2f} F{r['forgetting']:.2f}", fill="black")
        for i in range(T):
            for j in range(T):
                v = r["matrix"][i][j]
                if v != v:  # nan: not learnt yet
                    continue
                shade = (int(255 * (1 - v)), int(200 * v + 55), 60)
                draw.rectangle([x0 + j * cell, 2 * pad + i * cell, x0 + (j + 1) * cell - 1, 2 * pad + (i + 1) * cell - 1], fill=shade)
    img.save(path)
