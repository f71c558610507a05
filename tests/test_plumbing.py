"""The shared plumbing under the engines: atomic writes, optimizer state in safetensors, STUDIO_HOME."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from generators.files import (
    atomic_save_tensors,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    temporary_path,
    umask,
)
from generators.optim_state import load_optimizer, optimizer_tensors


def test_atomic_writes_replace_whole_files_and_leave_no_temporary(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_json(target, {"b": 1, "a": [1, 2]})
    assert target.read_text() == json.dumps({"b": 1, "a": [1, 2]}, indent=2) + "\n"
    atomic_write_json(target, {"b": 1, "a": 2}, sort_keys=True, newline=False)
    assert target.read_text() == json.dumps({"a": 2, "b": 1}, indent=2, sort_keys=True)
    atomic_write_text(tmp_path / "t.txt", "héllo", hidden=True)
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "t.txt").read_text() == "héllo" and (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert temporary_path(target).name == "a.json.tmp" and temporary_path(target, hidden=True).name == ".a.json.tmp"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.bin", "t.txt"]


def test_atomic_save_tensors_honours_the_umask(tmp_path):
    target = tmp_path / "w.safetensors"
    atomic_save_tensors({"x": torch.arange(4.0).view(2, 2).t()}, target, metadata={"format": "pt"})  # not contiguous
    assert torch.equal(load_file(target)["x"], torch.arange(4.0).view(2, 2).t())
    assert (target.stat().st_mode & 0o777) == 0o666 & ~umask()
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


@pytest.mark.parametrize("layout", ["{param}.{state}", "m.{state}.{param}"])
def test_optimizer_state_round_trips_and_training_continues_exactly(tmp_path, layout):
    def make():
        torch.manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(3, 2)) for _ in range(4)]
        return ps, torch.optim.AdamW(ps, lr=0.1)

    def steps(ps, opt, n):
        for _ in range(n):
            opt.zero_grad()
            sum((p ** 2).sum() for p in ps[:3]).backward()  # the last parameter never gets a gradient
            opt.step()

    def labels(ps):
        return {f"unet.block{i}.weight": p for i, p in enumerate(ps)} if layout.startswith("m.") else ps

    ps, opt = make()
    steps(ps, opt, 3)
    atomic_save_tensors(optimizer_tensors(opt, labels(ps), "opt.", layout=layout), tmp_path / "s.safetensors")
    saved = load_file(tmp_path / "s.safetensors")
    assert len(saved) == 9 and ("opt.0.exp_avg" in saved or "m.exp_avg.unet.block0.weight" in saved)
    ps2, opt2 = make()
    with torch.no_grad():
        for p, q in zip(ps, ps2):
            q.copy_(p)
    load_optimizer(opt2, labels(ps2), saved, "opt.", layout=layout)
    assert ps2[3] not in opt2.state
    steps(ps, opt, 2)
    steps(ps2, opt2, 2)
    assert all(torch.equal(p, q) for p, q in zip(ps, ps2))


def test_a_step_saved_with_shape_one_still_loads(tmp_path):
    """Museum and synthetic checkpoints written before the shared module stored `step` as shape (1,)."""
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.Adam([p])
    load_optimizer(opt, {"opt.0.0": p}, {"opt.0.0.step": torch.tensor([5.0]), "opt.0.0.exp_avg": torch.zeros(2),
                                         "opt.0.0.exp_avg_sq": torch.zeros(2)})
    assert opt.state[p]["step"].shape == () and float(opt.state[p]["step"]) == 5.0


def test_studio_home_expands_and_treats_empty_as_unset(monkeypatch, tmp_path):
    from styles.home import default_museum_dir, studio_home

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("STUDIO_HOME", "")
    assert studio_home() == tmp_path / ".studio" and default_museum_dir() == tmp_path / ".studio" / "museum"
    monkeypatch.delenv("STUDIO_HOME")
    assert studio_home() == tmp_path / ".studio"
    monkeypatch.setenv("STUDIO_HOME", "~/elsewhere")
    assert studio_home() == tmp_path / "elsewhere"
    assert studio_home(tmp_path / "x") == tmp_path / "x"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STUDIO_HOME", "rel")
    assert studio_home() == tmp_path / "rel" and studio_home().is_absolute()


BUG = """
import sys
from generators import miniworld
from studio.cli import main

def broken(*args, **kwargs):
    raise {exc}("{message}")

miniworld.write_images = broken
sys.exit(main(["miniworld", "render", "--out", sys.argv[1], "--n", "1"]))
"""


@pytest.mark.parametrize("exc, rc, traceback", [("ValueError", 1, True), ("RuntimeError", 1, True),
                                                ("UserError", 2, False), ("FileExistsError", 2, False)])
def test_a_bug_inside_a_command_keeps_its_traceback_and_a_user_error_is_one_line(tmp_path, exc, rc, traceback):
    import subprocess
    import sys

    code = BUG.format(exc=exc, message="something inside went wrong")
    if exc == "UserError":
        code = "from generators.errors import UserError\n" + code
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == rc, proc.stderr
    assert ("Traceback" in proc.stderr) == traceback and "something inside went wrong" in proc.stderr
    if not traceback:
        assert proc.stderr.strip().splitlines() == ["studio: error: something inside went wrong"]


def test_user_errors_are_value_errors_and_unusable_styles_are_user_errors():
    from generators.errors import UserError
    from styles.folder import UnusableStyle

    assert issubclass(UserError, ValueError) and issubclass(UnusableStyle, UserError)


# --------------------------------------------------------------------------- --set on every training command


class Reached(Exception):
    """Raised by a stand-in engine once it has seen the config the command built."""


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("studio: error: --set "), err
    return err[0]


def _style_dir(tmp_path):
    """One style folder of three small images."""
    import numpy as np
    from PIL import Image

    folder = tmp_path / "styles" / "grainy"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return tmp_path / "styles"


def _set_config_classes():
    from generators.evaluators import EvaluatorConfig
    from generators.gan.left import LeFTConfig
    from generators.gan.mode_seeking import ModeSeekingConfig
    from generators.gan.stylegan2 import GANConfig
    from generators.gan.task_trainer import TrainConfig
    from generators.museum.config import MuseumConfig
    from generators.sd_mini.config import MiniBaseConfig
    from generators.synthetic.fit import FitConfig
    from studio.commands.pretrain_gan import training_options_class

    return [MuseumConfig, FitConfig, GANConfig, LeFTConfig, ModeSeekingConfig, TrainConfig, EvaluatorConfig,
            MiniBaseConfig, training_options_class()]


def test_set_type_check_covers_every_config():
    """Every class --set reaches has type hints that resolve (else the check would be off) and
    defaults that pass it; a wrong type is refused by name."""
    import dataclasses

    from generators.config import _fits, _hints, parse_overrides
    from generators.errors import UserError

    for cls in _set_config_classes():
        hints = _hints(cls)
        fields = dataclasses.fields(cls)
        assert set(hints) >= {f.name for f in fields}, cls
        for f in fields:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            assert _fits(default, hints[f.name]), (cls.__name__, f.name, default)
    from generators.sd_mini.config import MiniBaseConfig

    with pytest.raises(UserError, match="unet_attention takes a JSON list of true/false values, not \\[0, 1\\]"):
        parse_overrides(["unet_attention=[0,1]"], MiniBaseConfig)
    assert parse_overrides(["unet_attention=[false,true]", "bird_share=null"], MiniBaseConfig) == \
        {"unet_attention": (False, True), "bird_share": None}


def test_ingest_set(tmp_path, capsys, monkeypatch):
    from generators.museum import engine
    from studio.cli import main

    args = ["ingest", str(tmp_path / "nowhere"), "--museum", str(tmp_path / "m")]
    assert main([*args, "--set", "lamda_sdl=0.1"]) == 2
    assert "lambda_sdl" in _one_line(capsys)
    for pair, says in (("rank=abc", 'rank takes an integer, not "abc"'), ("lambda_sdl=[1]", "lambda_sdl takes a number"),
                       ("token_init=red", "token_init takes a JSON list of strings"),
                       ("token_init_from_images=1", "token_init_from_images takes true or false")):
        assert main([*args, "--set", pair]) == 2  # a wrong type is refused by name, before peft sees it
        assert says in _one_line(capsys), pair
    assert not (tmp_path / "m").exists()  # refused before any work
    seen = {}

    def learn(museum, style, cfg, *a, **k):
        seen["cfg"] = cfg
        raise Reached

    monkeypatch.setattr(engine, "learn", learn)
    monkeypatch.setattr("generators.evaluators.load_evaluator", lambda device="cpu": None)
    with pytest.raises(Reached):
        main(["ingest", str(_style_dir(tmp_path)), "--museum", str(tmp_path / "m"), "--steps", "7",
              "--set", "lambda_sdl=0.125", "--set", "token_init=[\"red\"]"])
    assert seen["cfg"].lambda_sdl == 0.125 and seen["cfg"].token_init == ("red",) and seen["cfg"].steps == 7


def test_synth_fit_set(tmp_path, capsys, monkeypatch):
    from generators.synthetic import fit as ft
    from studio.cli import main

    args = ["synth", "fit", str(tmp_path), "--category", "bird", "--work", str(tmp_path / "w")]
    assert main([*args, "--set", "warmup=3"]) == 2
    assert "warmup_steps" in _one_line(capsys)
    seen = {}

    def fit(data_dir, work, cfg, **k):
        seen["cfg"] = cfg
        raise Reached

    monkeypatch.setattr(ft, "fit", fit)
    with pytest.raises(Reached):
        main([*args, "--steps", "5", "--set", "warmup_steps=3", "--set", "target_modules=[\"to_q\"]"])
    assert seen["cfg"].warmup_steps == 3 and seen["cfg"].target_modules == ("to_q",) and seen["cfg"].steps == 5


def test_gan_learn_set(tmp_path, capsys, monkeypatch):
    from generators.gan import lifelong
    from studio.cli import main

    args = ["gan", "learn", str(tmp_path), "--task", "t", "--store", str(tmp_path / "s")]
    assert main([*args, "--set", "left.rnk=2"]) == 2
    assert "left.rank" in _one_line(capsys)
    assert main([*args, "--set", "r1gamma=2"]) == 2
    assert "r1_gamma" in _one_line(capsys)
    assert main([*args, "--set", "left.rank=two"]) == 2
    assert "left.rank takes an integer" in _one_line(capsys)
    seen = {}

    def learn_task(store, task, folder, left=None, train=None, mode_seeking=None, **k):
        seen.update(left=left, train=train, ms=mode_seeking)
        raise Reached

    monkeypatch.setattr(lifelong, "learn_task", learn_task)
    with pytest.raises(Reached):
        main([*args, "--iters", "9", "--set", "r1_gamma=2.5", "--set", "left.init_std=0.05",
              "--set", "mode_seeking.weight=0.5"])
    assert seen["train"].r1_gamma == 2.5 and seen["train"].iters == 9
    assert seen["left"].init_std == 0.05 and seen["ms"].weight == 0.5


def test_pretrain_base_set_is_refused_in_one_line(tmp_path, capsys):
    from studio.cli import main

    assert main(["pretrain", "base", "--out", str(tmp_path / "b"), "--set", "family_shar=0.5"]) == 2
    assert "family_share" in _one_line(capsys) and not (tmp_path / "b").exists()


def test_pretrain_gan_set(tmp_path, capsys, monkeypatch):
    import functools

    from generators.gan import pretrain
    from studio.cli import main

    args = ["pretrain", "gan", "--out", str(tmp_path / "g"), "--device", "cpu"]
    assert main([*args, "--set", "r1_intervl=8"]) == 2
    line = _one_line(capsys)
    assert "r1_interval" in line and "mbstd_group" in line and not (tmp_path / "g").exists()
    seen = {}

    @functools.wraps(pretrain.pretrain_gan)  # the engine's signature: --set reads its training options off it
    def pretrain_gan(out_dir, config=None, **k):
        seen.update(config=config, **k)
        raise Reached

    monkeypatch.setattr(pretrain, "pretrain_gan", pretrain_gan)
    with pytest.raises(Reached):
        main([*args, "--channels", "64,64,32,16,8", "--lr", "0.001", "--set", "mbstd_group=2",
              "--set", "r1_interval=8", "--set", "ema_rampup=null", "--set", "lr=0.003"])
    assert seen["config"].mbstd_group == 2 and seen["config"].channels == (64, 64, 32, 16, 8)
    assert seen["r1_interval"] == 8 and seen["ema_rampup"] is None and seen["lr"] == 0.003  # after the flags
    assert main([*args, "--resume", "--set", "z_dim=64"]) == 2 and "resumed" in capsys.readouterr().err


def test_pretrain_evaluators_set(tmp_path, capsys, monkeypatch):
    from generators import evaluator_training
    from studio.cli import main

    args = ["pretrain", "evaluators", "--out", str(tmp_path / "e"), "--device", "cpu"]
    assert main([*args, "--set", "feature_dims=64"]) == 2
    assert "feature_dim" in _one_line(capsys) and not (tmp_path / "e").exists()
    seen = {}

    def train_evaluators(out_dir, seconds, config=None, **k):
        seen["config"] = config
        raise Reached

    monkeypatch.setattr(evaluator_training, "train_evaluators", train_evaluators)
    with pytest.raises(Reached):
        main([*args, "--set", "feature_dim=64", "--set", "widths=[8,16,24,32,40]"])
    assert seen["config"].feature_dim == 64 and seen["config"].widths == (8, 16, 24, 32, 40)
    assert "kind" in seen["config"].labels  # the default label spaces stay


def test_configs_round_trip_and_old_files_load():
    from generators.config import config_from_dict, config_to_dict
    from generators.errors import UserError
    from generators.evaluators import EvaluatorConfig
    from generators.gan.left import LeFTConfig
    from generators.gan.mode_seeking import ModeSeekingConfig
    from generators.gan.stylegan2 import GANConfig
    from generators.gan.task_trainer import TrainConfig
    from generators.museum.config import MuseumConfig
    from generators.sd_mini.config import MiniBaseConfig
    from generators.synthetic.fit import FitConfig

    for cls in (MuseumConfig, FitConfig, LeFTConfig, TrainConfig, ModeSeekingConfig, GANConfig, MiniBaseConfig):
        cfg = cls()
        d = json.loads(json.dumps(cfg.to_dict()))
        assert d == cfg.to_dict() and cls.from_dict(d) == cfg  # JSON and back: lists become tuples again
        with pytest.raises(UserError, match="unknown"):
            cls.from_dict({**d, "no_such_field": 1})
    # a field the file lacks takes its default, unless the default changed since: a file from before
    # noise_offset trained without it, one from before made captions and token words without them,
    # one from before num_vectors learnt a one-vector token
    before = {"captioner": "none", "token_init_from_images": False, "num_vectors": 1}
    assert MuseumConfig.from_dict({"steps": 5, "noise_offset": 0.1, "replay_pool": 16}) == MuseumConfig(steps=5, replay_pool=16, **before)
    assert MuseumConfig.from_dict({"steps": 5}) == MuseumConfig(steps=5, noise_offset=0.0, **before)
    assert GANConfig.from_dict({"channels": [8, 8, 8], "resolution": 16}).channels == (8, 8, 8)
    ev = EvaluatorConfig.from_dict({"widths": [4, 4, 4, 4, 4], "labels": {"kind": ["a"]}, "added_later": 1})
    assert ev.widths == (4, 4, 4, 4, 4) and config_to_dict(ev)["widths"] == [4, 4, 4, 4, 4]
    assert config_from_dict(LeFTConfig, {"rank": 2}) == LeFTConfig(rank=2)


# --------------------------------------------------------------------------- the diffusion objective


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_diffusers_noising_and_targets_are_the_formulas_they_replaced(prediction):
    """DDPMScheduler.add_noise / get_velocity give exactly what the engines computed by hand, so
    moving to them changes no trained weight and no figure."""
    from diffusers import DDPMScheduler

    from generators.diffusion_training import min_snr_weight, prediction_target

    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          prediction_type=prediction)
    alphas = sched.alphas_cumprod.clone()
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        z0, noise = torch.randn(8, 4, 8, 8, generator=g), torch.randn(8, 4, 8, 8, generator=g)
        t = torch.randint(0, 1000, (8,), generator=g)
        a = alphas[t].sqrt()[:, None, None, None]
        s = (1 - alphas[t]).sqrt()[:, None, None, None]
        assert torch.equal(sched.add_noise(z0, noise, t), a * z0 + s * noise)
        expected = a * noise - s * z0 if prediction == "v_prediction" else noise
        assert torch.equal(prediction_target(sched, z0, noise, t), expected)
        snr = alphas[t] / (1 - alphas[t])
        assert torch.equal(min_snr_weight(alphas, t, 5.0), torch.clamp(snr, max=5.0) / snr)


def test_min_snr_and_the_fit_warmup_stay_ours_because_the_library_differs():
    """compute_snr agrees only to rounding (so ours stays: bit-exact resumes), and diffusers'
    cosine schedule warms up from 0 where the fit's starts at lr / warmup (a different schedule)."""
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import compute_snr

    from generators.synthetic.fit import FitConfig, _lr

    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    t = torch.arange(0, 1000, 7)
    ours = sched.alphas_cumprod[t] / (1 - sched.alphas_cumprod[t])
    assert torch.allclose(compute_snr(sched, t), ours, rtol=1e-5)
    cfg = FitConfig(steps=20, warmup_steps=4, lr=1.0)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    lib = get_cosine_schedule_with_warmup(opt, cfg.warmup_steps, cfg.steps)
    theirs = []
    for _ in range(cfg.steps):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        lib.step()
    assert theirs[0] == 0.0 and _lr(cfg, 0) == 0.25  # the first step: no update with the library's
