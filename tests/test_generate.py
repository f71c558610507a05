"""The generate seam (generators.diffusion.generate with a Run) and both fronts on top of it: the same
images with and without a Run, progress in denoising steps with a fixed total, a stop that keeps only
finished batches; `studio generate` on Ctrl-C and the web app's Stop keep the images finished."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from generators import diffusion
from generators.run import Run

STEPS = 3


@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    return diffusion.load_base(str(tiny_pipeline_dir), "cpu")


def settings_for(n: int, steps: int = STEPS) -> list[diffusion.GenerationSettings]:
    prompts = ["a red star", "a blue fish on the sea background", "a cat"]
    return [diffusion.GenerationSettings(prompt=prompts[k % 3], seed=11 * k + 3, steps=steps, width=32, height=32)
            for k in range(n)]


def reference(pipe, settings, batch_size):
    """What `generate` drew before the run seam: one plain pipeline call per batch, a CPU generator per seed."""
    out = []
    for start in range(0, len(settings), batch_size):
        chunk = settings[start : start + batch_size]
        out += pipe(prompt=[s.prompt for s in chunk], negative_prompt=[s.negative_prompt for s in chunk],
                    num_inference_steps=chunk[0].steps, guidance_scale=chunk[0].guidance, height=chunk[0].height,
                    width=chunk[0].width, generator=[torch.Generator("cpu").manual_seed(s.seed) for s in chunk]).images
    return out


@dataclass
class Case:
    name: str
    n: int
    batch_size: int
    with_run: bool = True
    stop_after: int | None = None  # should_stop turns true at this poll (0: the first); None: never
    kept: int | None = None  # images a stopped call returns


# should_stop is polled before each batch and after each of its steps but the last: STEPS polls a batch.
CASES = [
    Case("no run", n=5, batch_size=2, with_run=False),
    Case("run, three batches", n=5, batch_size=2),
    Case("run, one batch", n=3, batch_size=8),
    Case("stop before anything", n=5, batch_size=2, stop_after=0, kept=0),
    Case("stop in the first batch", n=5, batch_size=2, stop_after=1, kept=0),
    Case("stop before the second batch", n=5, batch_size=2, stop_after=STEPS, kept=2),
    Case("stop in the second batch", n=5, batch_size=2, stop_after=STEPS + 2, kept=2),
    Case("stop in the last batch", n=5, batch_size=2, stop_after=2 * STEPS + 1, kept=4),
]


def check(pipe, case: Case, monkeypatch):
    """One checker for every case: images, progress, stop and previews against the reference."""
    monkeypatch.setattr(diffusion, "PROGRESS_EVERY_S", 0.0)  # every step, so the sequence is exact
    settings = settings_for(case.n)
    reports, previews, polls = [], [], [0]

    def should_stop():
        polls[0] += 1
        return case.stop_after is not None and polls[0] > case.stop_after

    run = Run(progress=lambda done, total, **info: reports.append((done, total, info["images_done"])),
              should_stop=should_stop, preview=lambda done, images, captions: previews.append((done, images, captions)))
    images = diffusion.generate(pipe, settings, batch_size=case.batch_size, run=run if case.with_run else None)

    want = reference(pipe, settings, case.batch_size)
    kept = case.n if case.stop_after is None else case.kept
    assert len(images) == kept and images.stopped == (kept < case.n)
    for got, ref in zip(images, want):  # exactly the images of the first `kept` settings
        assert np.array_equal(np.asarray(got), np.asarray(ref))
    if not case.with_run:
        assert reports == previews == []
        return
    total = STEPS * -(-case.n // case.batch_size)
    assert {t for _, t, _ in reports} == {total}
    done = [d for d, _, _ in reports]
    assert done == sorted(done) and done[0] == 0
    if case.stop_after is None:
        assert done == list(range(total + 1)) and reports[-1][2] == case.n
    else:
        assert done[-1] < total
    # a preview per finished batch, its images the ones returned, captioned with their prompts
    assert sum(len(p[1]) for p in previews) == kept
    shown = [im for p in previews for im in p[1]]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(shown, images))
    assert [c for p in previews for c in p[2]] == [s.prompt for s in settings[:kept]]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_generate_seam(pipe, case, monkeypatch):
    check(pipe, case, monkeypatch)


def test_an_image_depends_on_its_seed_not_on_its_batch(pipe):
    settings = settings_for(4)
    alone = diffusion.generate(pipe, settings, batch_size=1)
    together = diffusion.generate(pipe, settings, batch_size=4)
    for a, b in zip(alone, together):  # up to float rounding
        assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() <= 2


def test_cli_ctrl_c_writes_the_finished_images(tiny_pipeline_dir, tmp_path, monkeypatch, capsys):
    """Ctrl-C after the first batch of 8: its images are written, the command exits 130 saying so."""
    import studio.commands.generate as command
    from studio.cli import main

    class CtrlCAfterFirstBatch(command.TqdmProgress):
        def __call__(self, step, total, **info):
            super().__call__(step, total, **info)
            if info.get("images_done") == 8:
                os.kill(os.getpid(), signal.SIGINT)  # the StopFlag's handler takes it

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(command, "TqdmProgress", CtrlCAfterFirstBatch)
    out = tmp_path / "g"
    try:
        rc = main(["generate", "--prompt", "a red star", "--n", "10", "--steps", "2", "--seed", "5",
                   "--base", str(tiny_pipeline_dir), "--device", "cpu", "--out", str(out)])
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert rc == 130
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"seed{s}.png" for s in range(5, 13))
    assert len(list(out.glob("*.json"))) == 8
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"studio: stopped; wrote the 8 of 10 images finished to {out}"


def test_web_app_generates_the_batch_in_one_job_and_stop_keeps_finished_images(tiny_pipeline_dir, tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    from studio.jobs import Job
    from studio.webapp.app import Studio

    studio = Studio(tmp_path / "museum", str(tiny_pipeline_dir), tmp_path / "home", "cpu")
    shown = []
    keep = Job.set_previews

    def set_previews(job, previews):  # the page's Stop, pressed as the first batch of 8 is shown
        keep(job, previews)
        shown.append(len(previews))
        if job.title.endswith("stop") and not job.stop_requested:
            job.request_stop()

    monkeypatch.setattr(Job, "set_previews", set_previews)
    for title, batch, want, status in (("all", 3, 3, "finished"), ("stop", 12, 8, "stopped")):
        frames = list(studio.generate(f"a red star {title}", "", [], 4, 2, 4.0, batch))
        gallery, paths, text, _ = frames[-1]
        job = studio.board.latest("local", panel="generate")
        assert job.status == status and f"): {status}" in text, text
        assert len(studio.board.jobs()) == (1 if title == "all" else 2)  # the whole batch is one job
        assert [g[1] for g in gallery] == [f"seed {4 + k}" for k in range(want)] and len(paths) == want
        assert job.step <= job.total == 2 * -(-batch // 8)
        assert shown[-1] == want  # each batch shown as it finished: the first 8 of 12 before the stop
    assert len(list((tmp_path / "home" / "outputs").rglob("*.png"))) == 11
