"""The museum's files: style folders read and refused file by file, the ingest command, and a museum
that a kill -9 or a SIGTERM mid-ingest leaves intact and resumable. (tests/test_museum.py: the task
itself, its losses, exports and resume.)"""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from generators import miniworld
from studio.cli import main
from styles.folder import read_style_folder
from styles.museum import Museum
from tests.test_museum import make_style_folder


def _bad_files(folder):
    folder.mkdir(parents=True)
    (folder / "notes.pdf").write_bytes(b"%PDF-1.4 not an image")
    (folder / "fake.png").write_bytes(b"this is text, not a png")
    good = miniworld.generate(0, 1).image
    good.save(folder / "trunc.png")
    data = (folder / "trunc.png").read_bytes()
    (folder / "trunc.png").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (1, 1), (255, 0, 0)).save(folder / "dot.png")


def test_bad_files_are_rejected_each_with_a_reason(tmp_path):
    folder = tmp_path / "mixed"
    _bad_files(folder)
    img = miniworld.generate(0, 2).image
    img.convert("CMYK").save(folder / "cmyk.jpg")
    rgba = img.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "alpha.png")
    Image.fromarray((np.asarray(img.convert("L"), np.uint16) * 257)).save(folder / "deep16.png")
    img.save(folder / "ok.webp")
    style = read_style_folder(folder, 32)
    rejected = dict(style.rejected)
    assert set(rejected) == {"notes.pdf", "fake.png", "trunc.png", "dot.png"}
    assert "not an image file type" in rejected["notes.pdf"] and "too small" in rejected["dot.png"]
    assert "not a readable image" in rejected["fake.png"] and "not a readable image" in rejected["trunc.png"]
    assert sorted(im.path.name for im in style.images) == ["alpha.png", "cmyk.jpg", "deep16.png", "ok.webp"]
    for im in style.images:
        assert im.image.mode == "RGB" and im.image.size == (32, 32)


def test_exif_orientation_is_honoured(tmp_path):
    folder = tmp_path / "exif"
    folder.mkdir()
    img = Image.new("RGB", (64, 32), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 32, 32))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    for i in range(3):
        img.putpixel((63, 31), (i * 40, 0, 0))  # distinct files (duplicates are rejected)
        img.save(folder / f"{i}.jpg", exif=exif.tobytes())
    style = read_style_folder(folder, 32)
    arr = np.asarray(style.images[0].image, np.float32)
    assert arr[2, 16, 2] > 150 and arr[-3, 16, 0] > 150  # blue on top after transposing, red below


@pytest.mark.parametrize("case, message", [
    ("empty", "has 0 usable images"),
    ("junk", "has 0 usable images"),
    ("bad name", "style name"),
])
def test_unusable_styles_are_refused(tmp_path, case, message):
    folder = tmp_path / ("my style" if case == "bad name" else case)
    if case == "junk":
        _bad_files(folder)
    else:
        folder.mkdir()
        for i in range(3):
            miniworld.generate(0, i).image.save(folder / f"{i}.png")
        if case == "empty":
            for p in folder.iterdir():
                p.unlink()
    with pytest.raises(ValueError, match=message):
        read_style_folder(folder, 32)


def test_ingest_cli_skips_refuses_and_never_learns_junk(tiny_pipeline_dir, tmp_path, capsys):
    src = tmp_path / "src"
    make_style_folder(src / "sepia", "sepia")
    _bad_files(src / "junk")
    args = ["ingest", str(src), "--museum", str(tmp_path / "m"), "--steps", "2", "--base", str(tiny_pipeline_dir), "--device", "cpu"]
    assert main(args) == 2  # the junk style is reported as invalid, the others are learnt
    out, err = capsys.readouterr()
    assert "invalid junk" in out.replace("  ", " ") or "junk: invalid" in out
    assert err.splitlines()[-1].startswith(f"studio: error: {src / 'junk'} not learnt")
    m = Museum.open(tmp_path / "m")
    assert [s.name for s in m.styles] == ["sepia"]
    # Same name, same images: skipped. Same name, other images: refused; --new-version keeps both.
    import shutil

    shutil.rmtree(src / "junk")
    assert main(args) == 0 and "already in the museum" in capsys.readouterr().out
    make_style_folder(src / "sepia", "sepia", n=5, seed=9)
    assert main(args) == 2 and "--new-version" in capsys.readouterr().err
    assert main(args + ["--new-version"]) == 0
    assert [s.name for s in Museum.open(tmp_path / "m").styles] == ["sepia", "sepia-v2"]
    capsys.readouterr()
    assert main(["styles", "--museum", str(tmp_path / "m"), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in listed["styles"]] == ["sepia", "sepia-v2"]
    # kohya's noise offset reaches the task's config; a negative one is refused before anything is learnt
    make_style_folder(tmp_path / "src2" / "ink", "pencil_sketch")
    args[1] = str(tmp_path / "src2")
    assert main(args + ["--noise-offset", "-0.1"]) == 2 and "--noise-offset" in capsys.readouterr().err
    assert main(args + ["--noise-offset", "0.05", "--num-vectors", "2"]) == 0
    ink = Museum.open(tmp_path / "m")
    assert ink.manifest("ink")["config"]["noise_offset"] == 0.05 and ink.embedding("ink")["<ink>"].shape[0] == 2


def test_kill_9_mid_ingest_leaves_museum_intact_and_resumes(tiny_pipeline_dir, tmp_path):
    src = tmp_path / "src"
    make_style_folder(src / "a_first", "sepia")
    make_style_folder(src / "b_second", "halftone", seed=3)
    museum = tmp_path / "m"
    cmd = [sys.executable, "-m", "studio", "ingest", str(src), "--museum", str(museum), "--steps", "60",
           "--checkpoint-every", "5", "--base", str(tiny_pipeline_dir), "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = museum / "work" / "a_first" / "checkpoint.safetensors"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists()
    index = json.loads((museum / "museum.json").read_text())
    assert index["styles"] == []  # nothing half-learnt is in the museum
    from safetensors import safe_open

    with safe_open(ckpt, "pt") as fh:
        done = int(fh.metadata()["step"])
    assert 0 < done < 60
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"resumed at {done}" in proc.stdout
    assert [s.name for s in Museum.open(museum).styles] == ["a_first", "b_second"]


def test_sigterm_stops_cleanly_with_a_checkpoint(tiny_pipeline_dir, tmp_path):
    src = tmp_path / "src"
    make_style_folder(src / "only", "sepia")
    museum = tmp_path / "m"
    cmd = [sys.executable, "-m", "studio", "ingest", str(src), "--museum", str(museum), "--steps", "100000",
           "--checkpoint-every", "100000", "--base", str(tiny_pipeline_dir), "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    hashes = museum / "work" / "only" / "hashes.txt"
    deadline = time.time() + 120
    while not hashes.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "run the same command again to resume" in err
    assert (museum / "work" / "only" / "checkpoint.safetensors").exists()
    assert json.loads((museum / "museum.json").read_text())["styles"] == []
