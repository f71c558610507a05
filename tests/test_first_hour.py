"""A new user's first hour (issue 33): threads, fast one-line refusals, file modes, progress, styles in long prompts."""

import json
import os
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from generators import diffusion, miniworld
from generators.files import save_tensors
from generators.museum.config import MuseumConfig
from generators.museum.engine import learn, load_museum_pipeline
from generators.museum.export import export_style
from studio.cli import main
from styles.folder import read_style_folder
from styles.museum import Museum
from styles.reference import apply_style

THREADS = """
import threading, torch
from studio.cli import main
main(["miniworld", "styles"])
seen = []
worker = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))  # as the web app's job runner
worker.start(); worker.join()
print(torch.get_num_threads(), torch.get_num_interop_threads(), seen[0])
"""


@pytest.mark.parametrize("omp, expected", [(None, "1 1 1"), ("2", "2 2 2")])
def test_thread_policy_is_one_thread_unless_omp_num_threads_says_otherwise(omp, expected):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if omp:
        env["OMP_NUM_THREADS"] = omp
    proc = subprocess.run([sys.executable, "-c", THREADS], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == expected


@pytest.mark.parametrize("make, message", [(lambda p: p / "weights.safetensors", "is not a safetensors file"),
                                           (lambda p: p, "no model_index.json"),
                                           (lambda p: p / "missing", "neither an existing pipeline folder")])
def test_a_wrong_base_fails_in_one_line_before_the_heavy_imports(tmp_path, make, message):
    (tmp_path / "weights.safetensors").write_bytes(b"\0" * 16)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "studio", "generate", "--prompt", "x", "--out", str(tmp_path / "o"),
                           "--base", str(make(tmp_path))], capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - t0
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.startswith("studio: error: ")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert wall < 5, f"{wall:.1f} s to refuse a wrong --base"  # importing torch + diffusers alone takes longer here


@pytest.mark.parametrize("size", ["-8", "0", "12"])
def test_generate_refuses_a_size_that_is_not_a_positive_multiple_of_8(tmp_path, capsys, size):
    assert main(["generate", "--prompt", "x", "--out", str(tmp_path / "o"), "--size", size]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"studio: error: --size must be a positive multiple of 8 (the autoencoder halves it three times), got {size}"]
    assert not (tmp_path / "o").exists()


def test_tensor_files_honour_the_umask(tiny_pipeline_dir, tmp_path):
    old = os.umask(0o027)
    try:
        save_tensors({"a": torch.zeros(2)}, tmp_path / "a.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.safetensors").stat().st_mode) == 0o640
    # A saved pipeline's weights too (pretraining's save_pipeline, which built this one).
    modes = {stat.S_IMODE(f.stat().st_mode) for f in tiny_pipeline_dir.rglob("*.safetensors")}
    assert modes == {0o666 & ~old}


def test_generate_reports_progress_per_denoising_step(tiny_pipeline_dir, tmp_path, capsys, monkeypatch):
    from generators.run import Run

    monkeypatch.setattr(diffusion, "PROGRESS_EVERY_S", 0.0)  # every step (it is throttled to a few a second)
    pipe = diffusion.load_base(str(tiny_pipeline_dir), "cpu")
    settings = [diffusion.GenerationSettings(prompt="a red star", seed=k, steps=3, width=32, height=32) for k in range(3)]
    steps = []
    diffusion.generate(pipe, settings, batch_size=2, run=Run(progress=lambda done, total, **_: steps.append((done, total))))
    assert steps == [(k, 6) for k in range(0, 7)]  # two batches of three steps, each step reported
    assert main(["generate", "--prompt", "a red star", "--n", "2", "--steps", "3", "--base", str(tiny_pipeline_dir),
                 "--device", "cpu", "--out", str(tmp_path / "g")]) == 0
    assert "generate 2 images (steps)" in capsys.readouterr().err


@pytest.fixture(scope="module")
def museum_one_style(tiny_pipeline_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("museum")
    folder = root / "in" / "sepia"
    folder.mkdir(parents=True)
    for i in range(4):
        s = miniworld.generate(0, i)
        apply_style("sepia", s.image, seed=i).save(folder / f"{i:03d}.png")
        (folder / f"{i:03d}.txt").write_text(s.attributes.caption)
    museum = Museum.open(root / "m", base=str(tiny_pipeline_dir), create=True)
    cfg = MuseumConfig(steps=6, batch_size=2, replay_pool=4, replay_batch=2, sample_steps=2, checkpoint_every=2)
    learn(museum, read_style_folder(folder, 32), cfg, str(tiny_pipeline_dir), "cpu")
    return museum


def test_exported_files_are_readable_by_others_under_umask_022(museum_one_style, tmp_path):
    old = os.umask(0o022)
    try:
        out = export_style(museum_one_style, "sepia", "diffusers", tmp_path / "d")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes and set(modes.values()) == {0o644}, modes


def test_a_style_is_kept_in_a_prompt_longer_than_the_base_reads(museum_one_style, tiny_pipeline_dir, tmp_path, capsys):
    long = ("a red fish on the sea background, small, facing left, at the top right, "
            "a blue star on the grass background, large, facing right, in the center, with a green moon on the snow, at night")
    pipe = diffusion.load_base(str(tiny_pipeline_dir), "cpu")
    assert len(long) >= 175 and len(pipe.tokenizer(long).input_ids) > pipe.tokenizer.model_max_length
    common = ["generate", "--prompt", long, "--n", "1", "--steps", "3", "--museum", str(museum_one_style.root),
              "--base", str(tiny_pipeline_dir), "--device", "cpu"]
    assert main(common + ["--out", str(tmp_path / "plain")]) == 0
    capsys.readouterr()
    assert main(common + ["--style", "sepia", "--out", str(tmp_path / "styled")]) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "shortened to keep the styles" in line]
    assert len(notes) == 1 and f"the base reads {pipe.tokenizer.model_max_length}" in notes[0]
    meta = json.loads((tmp_path / "styled" / "seed0.json").read_text())
    assert meta["prompt"].endswith(", <sepia>") and long.startswith(meta["prompt"][: -len(", <sepia>")])
    # The token, every one of its vectors' entries, is inside the window the pipeline reads, so the
    # image is no longer the unstyled one.
    styled_pipe = load_museum_pipeline(museum_one_style, str(tiny_pipeline_dir), "cpu")
    tok = styled_pipe.tokenizer
    written_out = styled_pipe.maybe_convert_prompt(meta["prompt"], tok)
    read = tok(written_out, truncation=True, max_length=tok.model_max_length).input_ids
    entries = [t for t in written_out.split() if t.startswith("<sepia>")]
    assert len(entries) == museum_one_style.manifest("sepia")["config"]["num_vectors"]
    assert set(tok.convert_tokens_to_ids(entries)) <= set(read)
    plain = np.asarray(Image.open(tmp_path / "plain" / "seed0.png"), np.float32)
    styled = np.asarray(Image.open(tmp_path / "styled" / "seed0.png"), np.float32)
    assert not np.array_equal(plain, styled)  # pixel-identical before the fix
