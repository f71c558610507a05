"""The synthetic-data engine's two fronts agree: `studio synth fit` and the web app's Fine-tune both
call generators.synthetic.fit.fit, whose fit_config is the one policy. A fit in the work folder
with the same training config resumes (interrupted) or is reported finished; a changed training
field is refused with the same message, naming the field, both values and the fix; starting over
(--restart / "Start over") trains the new config and keeps the caption bank; a run field
(checkpoint_every) may change on resume."""

from __future__ import annotations

import json
import shutil

import pytest

gr = pytest.importorskip("gradio")

from generators.run import Run  # noqa: E402
from generators.synthetic import extract as ex  # noqa: E402
from generators.synthetic import fit as ft  # noqa: E402
from tests.test_synthetic import render_birds  # noqa: E402

STEPS, STOP_AT, SET = 4, 2, "birds"


def settings(base, steps=STEPS, **kw) -> ft.FitConfig:
    """The config both fronts build from category bird, --steps/Steps and --batch-size/Batch size 2."""
    return ft.FitConfig(category="bird", base=ft.resolve_base(str(base)), steps=steps, **{"batch_size": 2, **kw})


@pytest.fixture(scope="module")
def homes(tiny_pipeline_dir, tmp_path_factory):
    """Two web app homes whose set's work folder holds a fit stopped at step 2 of 4, and a finished one."""
    made = {}
    for state in ("interrupted", "finished"):
        home = tmp_path_factory.mktemp(state)
        data, work = home / "synthetic" / SET / "data", home / "synthetic" / SET / "work"
        render_birds(data, n=2)
        polls = iter(range(100))
        stop = (lambda: next(polls) >= STOP_AT) if state == "interrupted" else None
        result = ft.fit(data, work, settings(tiny_pipeline_dir), "cpu", Run(should_stop=stop))
        assert result.stopped == (state == "interrupted")
        made[state] = home
    return made


def cli_front(home, base, steps, restart, extra, capsys):
    from studio.cli import main

    data, work = home / "synthetic" / SET / "data", home / "synthetic" / SET / "work"
    code = main(["synth", "fit", str(data), "--category", "bird", "--work", str(work), "--base", str(base),
                 "--steps", str(steps), "--batch-size", "2", "--device", "cpu", *extra]
                + (["--restart"] if restart else []))
    err = capsys.readouterr().err
    if code != 0:  # the CLI's refusal: "studio: error: <the engine's message>" on stderr
        errors = [line.removeprefix("studio: error: ") for line in err.splitlines() if line.startswith("studio: error: ")]
        raise RuntimeError(errors[-1] if errors else err)
    return err


def web_front(home, base, steps, restart, extra, capsys):
    from studio.webapp import Studio

    studio = Studio(home / "museum", str(base), home, "cpu")
    try:
        *_, (status, _) = studio.synth_fit(SET, "bird", steps, 2, 0, ft.FitConfig.class_words,
                                           ft.FitConfig.use_context, restart)
    except gr.Error as err:
        raise RuntimeError(err.message) from None  # what the page shows
    assert "finished" in status, status
    return "\n".join(studio.board.latest("local", panel="synth_fit").lines)


FRONTS = {"cli": cli_front, "web": web_front}
CASES = {  # case: (work folder, steps asked, start over, outcome)
    "interrupted-same-resumes": ("interrupted", STEPS, False, "resumes"),
    "finished-same-is-finished": ("finished", STEPS, False, "finished"),
    "interrupted-changed-refused": ("interrupted", STEPS + 2, False, "refused"),
    "finished-changed-refused": ("finished", STEPS + 2, False, "refused"),
    "start-over-trains-the-new-config": ("interrupted", STEPS + 2, True, "starts over"),
}


def check(front, state, steps, restart, outcome, homes, tmp_path, base, capsys, extra=()):
    """The one checker: run a front on a copy of a prepared home and check the outcome and the files."""
    home = tmp_path / "home"
    shutil.copytree(homes[state], home)
    work = home / "synthetic" / SET / "work"
    bank = (work / ex.BANK_FILE).read_bytes()
    try:
        log, message = FRONTS[front](home, base, steps, restart, list(extra), capsys), ""
    except RuntimeError as err:
        log, message = "", str(err)
    if outcome == "refused":
        old_state = f"was interrupted at step {STOP_AT}" if state == "interrupted" else f"holds a finished fit of {STEPS} steps"
        assert message == (f"{work} {old_state} with steps={STEPS}; steps={steps} is refused: give the same value to "
                           + ("resume it" if state == "interrupted" else "keep it")
                           + ', or start over (`studio synth fit --restart`, or tick "Start over" in the web app), '
                             "which discards the fit and its checkpoint and keeps the caption bank"), message
        assert json.loads((work / ft.CONFIG_FILE).read_text())["steps"] == STEPS  # nothing was touched
        assert (work / ft.CHECKPOINT_FILE).is_file() == (state == "interrupted")
        return message
    assert not message, message
    info = json.loads((work / ft.RESULT_FILE).read_text())
    assert info["steps"] == steps and not (work / ft.CHECKPOINT_FILE).exists()
    assert (work / ex.BANK_FILE).read_bytes() == bank  # the caption bank is kept, also by a start over
    expected = {"resumes": f"resuming the interrupted fit at step {STOP_AT} of {STEPS}",
                "finished": "already holds this fit", "starts over": "starting over"}[outcome]
    assert expected in log, log
    if outcome == "starts over":
        assert "resuming" not in log and info["config"]["steps"] == steps
    return message


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("case", CASES)
def test_fronts_resume_refuse_and_start_over_alike(front, case, homes, tmp_path, tiny_pipeline_dir, capsys):
    check(front, *CASES[case], homes, tmp_path, tiny_pipeline_dir, capsys)


def test_a_run_field_may_change_on_resume(homes, tmp_path, tiny_pipeline_dir, capsys):
    check("cli", "interrupted", STEPS, False, "resumes", homes, tmp_path, tiny_pipeline_dir, capsys,
          extra=["--set", "checkpoint_every=1"])


def test_the_refusal_names_every_changed_field(homes, tiny_pipeline_dir):
    work = homes["interrupted"] / "synthetic" / SET / "work"
    with pytest.raises(ValueError, match=r"with rank=16, batch_size=2; rank=8, batch_size=4 is refused"):
        ft.fit_config(work, settings(tiny_pipeline_dir, rank=8, alpha=16.0, batch_size=4))
    assert ft.fit_config(work, settings(tiny_pipeline_dir, checkpoint_every=3)).checkpoint_every == 3
    # extracting only keeps the fit and its saved settings; a bank field is still refused
    assert ft.fit_config(work, settings(tiny_pipeline_dir, steps=9), extract_only=True).steps == STEPS
    with pytest.raises(ValueError, match=r"category='bird'; category='plane' is refused.*extracts the caption bank again"):
        ft.fit_config(work, ft.FitConfig(category="plane", base=ft.resolve_base(str(tiny_pipeline_dir))), extract_only=True)
