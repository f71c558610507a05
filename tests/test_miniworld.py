"""The procedural mini world: determinism, coverage, captions, CLI contract."""

import hashlib
import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from generators import miniworld as mw
from styles.reference import REFERENCE_STYLES, apply_style
from studio.cli import main


def _md5_tree(folder):
    return {p.relative_to(folder).as_posix(): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(tmp_path):
    assert main(["miniworld", "render", "--out", str(tmp_path / "a"), "--n", "12", "--seed", "3"]) == 0
    assert main(["miniworld", "render", "--out", str(tmp_path / "b"), "--n", "12", "--seed", "3"]) == 0
    assert main(["miniworld", "render", "--out", str(tmp_path / "c"), "--n", "12", "--seed", "4"]) == 0
    a, b, c = (_md5_tree(tmp_path / x) for x in "abc")
    assert a == b
    assert len(a) == 12 * 2 + 1
    assert a != c


def test_attribute_coverage_over_a_few_hundred_samples():
    samples = [mw.generate(11, i).attributes for i in range(600)]
    vocab = mw.attribute_vocabulary()
    for name in ("kind", "color", "background", "position", "scale", "tilt", "facing"):
        seen = Counter(getattr(a, name) for a in samples)
        assert set(seen) == set(vocab[name]), name
    birds = [mw.generate(12, i, kinds=("bird",)).attributes.subclass for i in range(300)]
    assert set(birds) == set(mw.BIRD_SUBCLASSES)
    assert len(mw.KINDS) >= 10 and len(mw.BIRD_SUBCLASSES) >= 10 and len(mw.COLORS) >= 8 and len(mw.BACKGROUNDS) >= 8


def test_caption_states_every_attribute():
    for i in range(200):
        a = mw.generate(2, i).attributes
        cap = a.caption
        assert cap.startswith(f"a {a.color} {a.kind} on the {a.background} background, {a.scale}, facing {a.facing}")
        assert (a.position in cap) and ((a.tilt in cap) == (a.tilt != "upright"))


def test_metadata_matches_images_and_captions(tmp_path):
    main(["miniworld", "render", "--out", str(tmp_path), "--n", "10", "--seed", "5", "--kinds", "fish,bird"])
    rows = [json.loads(line) for line in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 10
    for row in rows:
        assert row["kind"] in ("fish", "bird")
        assert (tmp_path / row["file_name"]).exists()
        assert (tmp_path / row["file_name"]).with_suffix(".txt").read_text().strip() == row["caption"]
        assert mw.Attributes(**{k: row[k] for k in ("kind", "color", "background", "position", "scale", "tilt", "facing", "subclass")}).caption == row["caption"]


def test_fine_grained_birds_share_silhouette_and_not_colour():
    # Same colour/pose, different subclass: images differ only in a small area.
    base = dict(kind="bird", color="red", background="sky", position="center", scale="large", tilt="upright", facing="right")
    imgs = {s: np.asarray(mw.render(mw.Attributes(**base, subclass=s)), np.float32) for s in mw.BIRD_SUBCLASSES}
    ref = imgs["sparrow"]
    for name, img in imgs.items():
        if name != "sparrow":
            changed = (np.abs(img - ref).max(-1) > 30).mean()
            assert 0 < changed < 0.08, (name, changed)
    colours = Counter((a.subclass, a.color) for a in (mw.generate(3, i, kinds=("bird",)).attributes for i in range(600)))
    for sub in mw.BIRD_SUBCLASSES:
        assert len({c for (s, c) in colours if s == sub}) >= 6


@pytest.mark.parametrize("size", [8, 64, 96, 512])
def test_sizes(size):
    assert mw.generate(0, 0, size=size).image.size == (size, size)


@pytest.mark.parametrize("size", [60, 0, 520])
def test_bad_sizes(size):
    with pytest.raises(ValueError):
        mw.render(mw.generate(0, 0).attributes, size=size)


def test_each_style_changes_an_image_its_own_way():
    img = mw.generate(1, 4).image
    outs = {s: np.asarray(apply_style(s, img), np.float32) for s in REFERENCE_STYLES}
    plain = np.asarray(img, np.float32)
    for s, o in outs.items():
        assert np.abs(o - plain).mean() > 5, s
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.abs(outs[a] - outs[b]).mean() > 5, (a, b)


def test_style_folders(tmp_path):
    assert main(["miniworld", "render", "--out", str(tmp_path), "--n", "3", "--seed", "1", "--as-style-folders"]) == 0
    folders = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert folders == sorted(REFERENCE_STYLES)
    for f in folders:
        assert len(list((tmp_path / f).glob("*.png"))) == 3 and len(list((tmp_path / f).glob("*.txt"))) == 3
    rows = [json.loads(line) for line in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    assert {r["style"] for r in rows} == set(REFERENCE_STYLES)
    assert len({r["caption"] for r in rows}) > 20  # content varies across styles


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n", "2", "--style", "nope"], "unknown style"),
        (["--n", "2", "--kinds", "dragon"], "unknown kind"),
        (["--n", "0"], "--n must be"),
        (["--n", "2", "--size", "30"], "multiple of 8"),
    ],
)
def test_bad_arguments_give_one_line_errors(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "-m", "studio", "miniworld", "render", "--out", str(tmp_path / "o"), *args],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_refuses_non_empty_out(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        mw.write_images(tmp_path, 1)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_styles_command_lists_at_least_ten(capsys):
    assert main(["miniworld", "styles"]) == 0
    names = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert names == list(REFERENCE_STYLES) and len(names) >= 10
