"""The museum's three fronts agree (issue 31): `studio ingest`, the web app's upload and its folder
panel all plan through generators.museum.ingest, so an interrupted style resumes the same way in
each, and each refuses the same changed training config with the same reason."""

from __future__ import annotations

import json

import pytest

gr = pytest.importorskip("gradio")

from generators import miniworld  # noqa: E402
from generators.museum.ingest import ingest, plan  # noqa: E402
from generators.run import Run  # noqa: E402
from styles.museum import Museum  # noqa: E402
from styles.reference import apply_style  # noqa: E402

STEPS, STOP_AT = 4, 2


def interrupted_style(tmp_path, base):
    """An 'ink' style uploaded to the web app's staging folder, learnt by the library until step 2 of 4."""
    home, museum_dir = tmp_path / "home", tmp_path / "museum"
    folder = home / "uploads" / "museum" / "ink"
    folder.mkdir(parents=True)
    for i in range(4):
        apply_style("sepia", miniworld.generate(5, i, size=32).image, seed=i).save(folder / f"{i}.png")
    museum = Museum.open(museum_dir, base=str(base), create=True)
    items = plan(folder.parent, museum, 32, overrides={"steps": STEPS, "checkpoint_every": 1})
    polls = iter(range(100))
    manifests = ingest(museum, items, str(base), "cpu", Run(should_stop=lambda: next(polls) >= STOP_AT))
    assert manifests[-1]["stopped"] and manifests[-1]["result"]["steps"] == STOP_AT
    return home, museum_dir, folder


def cli_front(home, museum_dir, folder, base, steps):
    from studio.cli import main

    code = main(["ingest", str(folder.parent), "--museum", str(museum_dir), "--steps", str(steps), "--base", str(base),
                 "--device", "cpu"])
    return code == 0


def upload_front(home, museum_dir, folder, base, steps):
    from studio.webapp import Studio

    studio = Studio(museum_dir, str(base), home, "cpu")
    try:  # no files: "learn style" again with the same name resumes the staged upload
        *_, (status, _) = studio.museum_learn(None, "ink", "", "", steps, 8, 0)
    except gr.Error as err:
        raise RuntimeError(str(err)) from None
    return "finished" in status


def folder_front(home, museum_dir, folder, base, steps):
    from studio.webapp import Studio

    studio = Studio(museum_dir, str(base), home, "cpu")
    *_, (status, _, report) = studio.museum_ingest(str(folder.parent), steps, False)
    if "ink: refuse - " in report:
        raise RuntimeError(report)
    return "finished" in status


FRONTS = {"cli": cli_front, "upload": upload_front, "folder": folder_front}


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("steps, outcome", [(STEPS, "resumes"), (STEPS + 2, "refused")])
def test_fronts_resume_and_refuse_alike(front, steps, outcome, tmp_path, tiny_pipeline_dir, capsys):
    home, museum_dir, folder = interrupted_style(tmp_path, tiny_pipeline_dir)
    try:
        finished, message = FRONTS[front](home, museum_dir, folder, tiny_pipeline_dir, steps), ""
    except RuntimeError as err:
        finished, message = False, str(err)
    message += capsys.readouterr().err
    index = json.loads((museum_dir / "museum.json").read_text())
    if outcome == "resumes":
        assert finished, message
        manifest = json.loads((museum_dir / "styles" / "ink" / "manifest.json").read_text())
        assert manifest["result"]["resumed_from"] == STOP_AT and manifest["result"]["steps"] == STEPS
        assert [s["name"] for s in index["styles"]] == ["ink"]
    else:
        assert not finished
        assert f"interrupted at step {STOP_AT}" in message and f"steps={STEPS + 2} is refused" in message, message
        assert index["styles"] == [] and (museum_dir / "work" / "ink" / "checkpoint.safetensors").is_file()
