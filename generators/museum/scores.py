"""The museum's style scores in words, for the CLI (`studio ingest`'s report, `studio styles`) and
the web app: how many of the fixed score samples the style evaluator recognises, beside chance.

Light on purpose (no torch): `studio styles` only reads the museum's manifests."""

from __future__ import annotations

# The fixed content prompts a learnt style is sampled on to score it (generators/museum/engine.score_style).
SCORE_PROMPTS = (
    "a red star on the grass background, medium, facing right, in the center",
    "a blue fish on the sea background, large, facing left, in the center",
    "a yellow house on the snow background, medium, facing right, in the center",
    "a green car on the desert background, large, facing right, in the center",
)


def score_counts() -> tuple[int, int]:
    """(samples drawn per style score, classes of the style evaluator: the reference styles and plain)."""
    from styles.reference import REFERENCE_STYLES

    return len(SCORE_PROMPTS), 1 + len(REFERENCE_STYLES)


def score_text(metrics: dict | None) -> str:
    """The museum's style metrics in words: how many samples the style evaluator recognises beside
    chance (reference styles), or the feature likeness (other styles)."""
    if not metrics:
        return "not scored (no evaluator)"
    n, classes = score_counts()
    acc, sim = metrics.get("style_accuracy"), metrics.get("style_similarity")
    if acc is not None:
        return f"recognised in {round(acc * n)} of {n} samples (chance: 1 in {classes})"
    if sim is not None:
        return f"likeness {sim:.2f} (feature cosine, 1 = same)"
    score = metrics.get("style_score")
    return "not scored" if score is None else f"score {score:.2f}"


def score_help() -> str:
    """How to read score_text, in a paragraph."""
    n, classes = score_counts()
    return (f"How well it is drawn: after learning, Studio draws {n} fixed prompts (a star, a fish, a house, a car) with "
            f"the style's token, and the style evaluator (a classifier of the {classes - 1} reference styles and plain) "
            f"names the style of each sample. 'Recognised in k of {n}' counts the samples it names as this style: "
            f"chance is 1 in {classes} (about {n / classes:.1f} of {n}), {n} of {n} is best; with {n} samples the count "
            f"moves in whole steps, so a short and a long training can share a count. Styles outside the reference set "
            f"get a likeness instead: the cosine between the evaluator's mean features of the samples and of the style "
            f"images (1 = the same, higher is better).")


def style_metrics(museum, entry) -> dict | None:
    """A museum style's metrics from its manifest (the index's bare score where the manifest is unreadable)."""
    try:
        metrics = museum.manifest(entry.name).get("metrics")
    except Exception:  # noqa: BLE001 - an unreadable manifest only costs the score's detail
        metrics = None
    return metrics or ({"style_score": entry.score} if entry.score is not None else None)
