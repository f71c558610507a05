"""The museum's style scores in words (generators/museum/scores.py), as the CLI and the web app print them."""

from __future__ import annotations

import json


def test_score_text():
    from generators.museum import engine
    from generators.museum.scores import score_text

    assert engine.SCORE_PROMPTS and engine.score_text is score_text
    assert score_text({"style_accuracy": 0.25, "style_similarity": 0.9, "style_score": 0.25}) == \
        "recognised in 1 of 4 samples (chance: 1 in 13)"
    assert score_text({"style_accuracy": None, "style_similarity": 0.8123}).startswith("likeness 0.81")
    assert score_text({"style_score": 0.5}) == "score 0.50" and score_text(None) == "not scored (no evaluator)"


def test_studio_styles_prints_the_score_in_words(tmp_path, capsys):
    from studio.cli import main

    root = tmp_path / "m"
    styles = [{"name": "sepia", "token": "<sepia>", "task": 1, "images": 4, "created": "2026-12-06 00:00:00", "score": 0.25},
              {"name": "ink", "token": "<ink>", "task": 2, "images": 3, "created": "2026-12-06 00:01:00", "score": None}]
    (root / "styles" / "sepia").mkdir(parents=True)
    (root / "styles" / "sepia" / "manifest.json").write_text(json.dumps(
        {"metrics": {"style_accuracy": 0.25, "style_similarity": 0.9, "style_score": 0.25}}))
    (root / "museum.json").write_text(json.dumps({"format": 1, "base": "studio-mini", "styles": styles}))
    assert main(["styles", "--museum", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "recognised in 1 of 4 samples (chance: 1 in 13)" in out[1] and "style score" not in "\n".join(out)
    assert out[2].strip().startswith("ink") and out[2].endswith("not scored (no evaluator)")
