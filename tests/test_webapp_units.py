"""The web app's parts without a launched app: Studio(...) called directly (estimates, timings, the
forgetting heat map, interrupted styles), safe names and zip extraction, the job board, the serve
command's options and the page's one error wrapper. (tests/test_webapp.py: the launched app through
gradio_client.)"""

from __future__ import annotations

import json
import time
import zipfile

import pytest

gr = pytest.importorskip("gradio")

from generators import miniworld  # noqa: E402


def test_job_board_queue_stop_and_failure():
    from studio.jobs import JobBoard

    board = JobBoard()
    a = board.submit("museum", "a", "ann")
    b = board.submit("museum", "b", "bob")
    assert [r[3] for r in board.rows()] == ["queued", "queued"]
    board.stop("bob", "museum")
    list(board.run(b, lambda job: 1 / 0))  # stopped while queued: never runs
    assert b.status == "stopped"

    def work(job):
        for step in range(1, 1000):
            if job.should_stop():
                return "stopped early"
            job.progress(step, 999, loss=0.5)
            if step == 3:
                board.stop("ann")
        return "ran out"

    assert [j.status for j in board.run(a, work)][-1] == "stopped" and a.result == "stopped early" and a.step == 3
    d = board.submit("gan", "d", "ann")
    assert "belongs to ann" in board.stop_job(d.id, "bob") and not d.stop_requested
    assert board.stop_job(None, "ann") == "pick a job in the table first"
    assert "will not start" in board.stop_job(d.id, "ann") and d.stop_requested
    list(board.run(d, lambda job: 1 / 0))
    assert "already stopped" in board.stop_job(d.id, "ann") and board.stop_job(999, "ann") == "no job 999"
    c = board.submit("gan", "c", "ann")
    with pytest.raises(ZeroDivisionError):
        list(board.run(c, lambda job: 1 / 0))
    assert c.status == "failed" and "ZeroDivisionError" in board.log_text(c.id)


def test_forgetting_heatmap_reads_the_museum_file(tmp_path):
    from studio.webapp import Studio

    studio = Studio(tmp_path / "m", None, tmp_path / "home")
    assert "No forgetting matrix" in studio.forgetting_html()
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "forgetting.json").write_text(json.dumps(
        {"styles": ["sepia", "<b>x</b>"], "matrix": [[0.9, None], [0.7, 0.8]]}))
    page = studio.forgetting_html()
    assert page.count("<td style=") == 3 and "0.70" in page and "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x" not in page
    # the file bench/forgetting.py writes (NaN where a style is not learnt yet) shows its "full" method
    (tmp_path / "m" / "forgetting.json").write_text(json.dumps(
        {"styles": ["sepia", "halftone"], "results": {"naive": {"matrix": [[0.1, float("nan")], [0.2, 0.3]]},
                                                      "full": {"matrix": [[0.9, float("nan")], [0.85, 0.95]]}}}))
    page = studio.forgetting_html()
    assert page.count("<td style=") == 3 and "0.85" in page and "0.20" not in page
    # several runs: the latest is shown, whatever its name
    import os

    newer = tmp_path / "m" / "forgetting-a.json"
    newer.write_text(json.dumps({"styles": ["sepia"], "matrix": [[0.42]]}))
    os.utime(newer, (time.time() + 10, time.time() + 10))
    assert "0.42" in studio.forgetting_html()


@pytest.mark.parametrize("name, safe", [
    ("cat.png", "cat.png"), ("кот.png", "file.png"), ("../../etc/passwd", "passwd"), (".hidden.jpg", "hidden.jpg"),
    ("a b$c.JPG", "a_b_c.jpg"), ("x" * 300 + ".webp", "x" * 120 + ".webp"), ("...", "file"),
])
def test_safe_file_name_keeps_the_suffix(name, safe):
    from studio.webapp import safe_file_name

    assert safe_file_name(name) == safe


def test_safe_zip_extraction(tmp_path):
    from studio.webapp import UserError, safe_extract_zip

    import io

    png = io.BytesIO()
    miniworld.generate(0, 0, size=16).image.save(png, "PNG")
    z = tmp_path / "a.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("cats/1.png", png.getvalue())
        zf.writestr("cats/notes.exe", b"x")
        zf.writestr("__MACOSX/cats/._1.png", b"x")
    got = safe_extract_zip(z, tmp_path / "out", (".png",))
    assert [p.relative_to(tmp_path / "out").as_posix() for p in got] == ["cats/1.png"]
    broken = tmp_path / "c.zip"
    with zipfile.ZipFile(broken, "w") as zf:
        zf.writestr("cats/2.png", png.getvalue()[:40])  # truncated
    with pytest.raises(UserError, match=r"'cats/2.png': not a readable image"):
        safe_extract_zip(broken, tmp_path / "out3", (".png",))
    bad = tmp_path / "b.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../../etc/x.png", b"x")
    with pytest.raises(UserError, match="outside"):
        safe_extract_zip(bad, tmp_path / "out2", (".png",))


def test_serve_command_parses():
    import argparse

    import studio.commands.serve as serve

    assert serve.parse_auth("ann:secret:x") == ("ann", "secret:x")
    with pytest.raises(ValueError):
        serve.parse_auth("nopass")
    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers())
    args = parser.parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.port == 7860 and args.auth is None and args.museum is None


def test_a_job_outlives_its_follower_and_measures_its_time():
    """Closing a page cancels its event (the follower generator is closed): the job runs on; only Stop stops it."""
    import threading

    from studio.jobs import JobBoard, duration

    board = JobBoard()
    gate = threading.Event()

    def work(job):
        for step in range(1, 6):
            if job.should_stop():
                return {"stopped": True}
            job.progress(step, 5)
            time.sleep(0.05)
            if step == 2:
                gate.wait(10)
        return {"done": True}

    job = board.submit("museum", "long", "local")
    job.estimate_s = 600.0
    assert "estimated 10 min" in job.summary()
    follower = board.run(job, work, poll=0.01)
    while next(follower).step < 2:
        pass
    follower.close()  # the tab was closed
    gate.set()
    job._ended.wait(10)
    assert job.status == "finished" and job.step == 5 and not job.stop_requested
    assert job.seconds_per_step() > 0 and "left" not in job.summary()
    assert [j.status for j in board.follow(job)] == ["finished"]  # a reopened page finds it finished
    running = board.submit("museum", "running", "local")
    running.status, running.started, running.total = "running", time.time(), 100
    running._first, running._last, running.step = (1, 0.0), (11, 20.0), 11
    assert running.seconds_per_step() == 2.0 and "about 3 min left" in running.summary()  # 89 steps x 2 s
    assert (duration(40), duration(600), duration(3900)) == ("40 s", "10 min", "1 h 05 min")
    assert board.latest("local", "museum") is running and board.latest("ann") is None


def test_estimates_scores_and_category_words(tmp_path):
    from studio.webapp import Studio, score_text

    studio = Studio(tmp_path / "m", None, tmp_path / "home")
    assert "not measured on this machine yet" in studio.estimate_md(300, 8)
    studio.record_timing("museum", 3.0, 8, 20.0, "job 1")
    assert studio.estimate("museum", 300, 4)[0] == 1.5 * 300 + 20.0  # seconds per step scale with the batch
    assert "about 15 min" in studio.estimate_md(300, 8) and "3.00 s per step at batch 8" in studio.estimate_md(300, 8)
    assert score_text({"style_accuracy": 0.25, "style_similarity": 0.9, "style_score": 0.25}) == \
        "recognised in 1 of 4 samples (chance: 1 in 13)"
    assert score_text({"style_accuracy": None, "style_similarity": 0.8123}).startswith("likeness 0.81")
    assert score_text(None) == "not scored (no evaluator)"
    assert studio.category_note("bird") == "" and studio.unknown_words("red bird") == []
    assert "does not know the word **photo**" in studio.category_note("photo")


def test_speed_check_gives_an_estimate(tmp_path):
    from studio.webapp import Studio

    studio = Studio(tmp_path / "m", None, tmp_path / "home")
    text = studio.museum_measure(300, 1)
    assert "Estimated time:** about" in text and "s per step at batch 1" in text and "a speed check" in text, text
    timing = studio.timings()["museum:cpu"]
    assert timing["s_per_step"] > 0 and timing["batch"] == 1 and timing["overhead_s"] > 0
    assert not (tmp_path / "m").exists()  # the check learns nothing into the museum


def test_interrupted_skips_styles_the_museum_holds(tmp_path):
    """A kill between a style's commit and its clean-up leaves work/<name>: it is not an interrupted task."""
    from safetensors.torch import save_file
    import torch

    from studio.webapp import Studio

    studio = Studio(tmp_path / "m", None, tmp_path / "home")
    entry = {"name": "sepia", "token": "<sepia>", "task": 1, "images": 4, "created": "2026-12-06 00:00:00"}
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "museum.json").write_text(json.dumps({"format": 1, "base": studio.base_name(), "styles": [entry]}))
    for name in ("sepia", "ink"):
        (tmp_path / "m" / "work" / name).mkdir(parents=True)
        save_file({"x": torch.zeros(1)}, str(tmp_path / "m" / "work" / name / "checkpoint.safetensors"),
                  metadata={"step": "3", "config": json.dumps({"steps": 10})})
    assert [t["name"] for t in studio.interrupted()] == ["ink"]
    assert "ink: stopped at step 3/10" in studio.styles_html() and "sepia: stopped" not in studio.styles_html()


def test_page_errors_shows_user_errors_and_logs_bugs(caplog):
    """The web app's one error wrapper: a user error reaches the page as is (and fails its job); a bug
    (a plain ValueError, from inside torch say, included) names its type on the page and leaves its
    traceback in the server's log and the job's."""
    from studio.jobs import JobBoard
    from studio.webapp import UserError, page_errors

    board = JobBoard()
    job = board.submit("museum", "x", "local")
    with pytest.raises(gr.Error) as caught:
        with page_errors(board, job):
            raise UserError("bad name")
    assert caught.value.message == "bad name" and job.status == "failed" and job.error == "bad name"
    other = board.submit("museum", "y", "local")
    with caplog.at_level("ERROR", logger="studio.webapp"), pytest.raises(gr.Error) as caught:
        with page_errors(board, other):
            1 / 0
    assert caught.value.message.startswith("ZeroDivisionError: division by zero (the job's log")
    assert "Traceback" in caplog.text and "Traceback" in board.log_text(other.id) and other.status == "failed"
    caplog.clear()
    third = board.submit("museum", "z", "local")
    with caplog.at_level("ERROR", logger="studio.webapp"), pytest.raises(gr.Error) as caught:
        with page_errors(board, third):
            raise ValueError("expected a 4-D tensor")
    assert caught.value.message.startswith("ValueError: expected a 4-D tensor (the job's log")
    assert "Traceback" in caplog.text and "Traceback" in board.log_text(third.id) and third.status == "failed"
    for err in (FileNotFoundError("no such folder: /x"), PermissionError("Permission denied: '/x'")):
        with pytest.raises(gr.Error) as caught:
            with page_errors():
                raise err
        assert caught.value.message == str(err)
