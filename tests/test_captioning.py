"""Captions the museum makes for images without a caption file (generators/captioning.py)."""

import json
import shutil

import pytest
from PIL import Image

from generators import captioning, miniworld
from generators.errors import UserError
from generators.museum.engine import learn
from generators.museum.ingest import task_report
from styles.folder import read_style_folder
from styles.museum import Museum
from styles.reference import REFERENCE_STYLES, apply_style
from tests.conftest import tiny_blip
from tests.test_museum import make_style_folder, tiny_cfg


def test_mini_world_captions_say_the_content_of_styled_images():
    """The committed evaluator reads kind and background through every reference style; the colour,
    which a style owns, is never said."""
    samples = [miniworld.generate(5, i) for i in range(36)]
    images = [apply_style(REFERENCE_STYLES[i % len(REFERENCE_STYLES)], s.image, seed=i) for i, s in enumerate(samples)]
    captions = captioning.MiniWorldCaptioner()(images)
    kinds = [c.startswith(f"a {s.attributes.kind} ") for c, s in zip(captions, samples)]
    backgrounds = [f"on the {s.attributes.background} background" in c for c, s in zip(captions, samples)]
    assert sum(kinds) / len(kinds) >= 0.9 and sum(backgrounds) / len(backgrounds) >= 0.9
    assert not any(f" {colour} " in f" {c} " for c in captions for colour in miniworld.COLORS)


def test_unsure_attributes_are_left_out():
    read = {"kind": None, "background": "sea", "scale": None, "facing": "left", "tilt": "upright", "position": "center"}
    assert captioning.MiniWorldCaptioner._caption(read) == "a picture on the sea background, facing left, in the center"
    read = {"kind": "fish", "background": None, "scale": "small", "facing": None, "tilt": "tilted left", "position": "top"}
    assert captioning.MiniWorldCaptioner._caption(read) == "a fish, small, tilted left, at the top"


def test_auto_is_the_mini_world_only_on_a_studio_pretrained_base(tiny_pipeline_dir, tmp_path):
    assert captioning.resolve("auto", None) == "mini-world"  # the embedded default
    assert captioning.resolve("auto", str(tiny_pipeline_dir)) == "none"
    marked = tmp_path / "pipe"
    shutil.copytree(tiny_pipeline_dir, marked)
    (marked / captioning.PRETRAINED_MARKER).write_text("{}")
    assert captioning.resolve("auto", str(marked)) == "mini-world"
    assert captioning.resolve("none", None) == "none" and captioning.load_captioner("none", None) is None


def test_given_captions_win_and_missing_ones_are_made(tiny_pipeline_dir, tmp_path):
    """A folder with two caption files of four images: a task records two made captions, keeps the
    two given ones, and every caption joins the style's replay prompts."""
    folder = make_style_folder(tmp_path / "in" / "sepia", "sepia")
    for name in ("001.txt", "003.txt"):
        (folder / name).unlink()
    museum = Museum.open(tmp_path / "m", base=str(tiny_pipeline_dir), create=True)
    manifest = learn(museum, read_style_folder(folder, 32), tiny_cfg(captioner="mini-world"), str(tiny_pipeline_dir), "cpu")
    made = [im.get("made_caption") for im in manifest["images"]]
    assert [im["caption"] is None for im in manifest["images"]] == [False, True, False, True]
    assert [m is not None for m in made] == [False, True, False, True]
    assert manifest["captioner"] == "mini-world" and len(manifest["captions"]) == 4
    assert "2 images without a caption file, captioned by mini-world, e.g. 001.png" in "\n".join(task_report(manifest))
    assert json.loads((museum.root / "styles" / "sepia" / "manifest.json").read_text())["captions"] == manifest["captions"]
    # the default on a base Studio did not pretrain: no captions made
    plain = learn(museum, read_style_folder(make_style_folder(tmp_path / "in" / "halftone", "halftone", captions=False), 32),
                  tiny_cfg(), str(tiny_pipeline_dir), "cpu")
    assert plain["captioner"] == "none" and plain["captions"] == [] and "made_caption" not in plain["images"][0]
    assert plain["token_init"] == [] and manifest["token_init"] == []  # a base without style words: the vocabulary's mean


def test_a_transformers_captioner_from_a_folder(tmp_path):
    folder = tiny_blip(tmp_path / "blip", says="fish")
    images = [Image.new("RGB", (40, 40), (200, 10, 10))] * 3
    assert captioning.TransformersCaptioner(str(folder), max_new_tokens=3)(images) == ["fish fish fish"] * 3
    made = captioning.fill_captions(["given", None, None], images, str(folder), None)
    assert made[0] == "given" and made[1].startswith("fish")


def test_a_captioner_without_safetensors_is_refused(tmp_path):
    folder = tiny_blip(tmp_path / "blip-bin", safetensors=False)
    with pytest.raises(UserError, match="safetensors"):
        captioning.TransformersCaptioner(str(folder))


def test_style_words_start_a_token_where_the_base_knows_them(tiny_pipeline_dir):
    """On studio-mini 2 the family head names pixel art in the base's own style words; a base that
    has no such words (a tiny base's, any other base) gets none."""
    from transformers import CLIPTokenizer

    from generators.base_source import EMBEDDED

    images = [apply_style("pixel_art", miniworld.generate(0, i).image, seed=i) for i in range(8)]
    words = captioning.style_words(images, None, CLIPTokenizer.from_pretrained(EMBEDDED["studio-mini-2"] / "tokenizer"))
    assert "pixelated" in words
    tiny = CLIPTokenizer.from_pretrained(tiny_pipeline_dir / "tokenizer")
    assert captioning.style_words(images, str(tiny_pipeline_dir), tiny) == ()
    # a mini-world base from before the style family (its tokenizer splits the family's words)
    assert captioning.style_words(images, None, tiny) == ()


def test_studio_caption_writes_what_ingestion_would_make_and_keeps_given_files(tmp_path, capsys):
    """`studio caption DIR` on a folder of style folders: a sidecar for each image without one,
    the same text a task would make; an existing caption file is left as it was."""
    from studio.cli import main

    for k, style in enumerate(["sepia", "halftone"]):
        make_style_folder(tmp_path / "drop" / style, style, n=3, seed=k, captions=False)
    given = tmp_path / "drop" / "sepia" / "000.txt"
    given.write_text("my own words\n")
    assert main(["caption", str(tmp_path / "drop"), "--captioner", "mini-world", "--device", "cpu"]) == 0
    assert "wrote 5 caption files" in capsys.readouterr().out
    assert given.read_text() == "my own words\n"
    image = tmp_path / "drop" / "halftone" / "001.png"
    made = captioning.fill_captions([None], [Image.open(image).convert("RGB")], "mini-world", None)[0]
    assert image.with_suffix(".txt").read_text().strip() == made
    assert main(["caption", str(tmp_path / "drop"), "--captioner", "none"]) != 0
    assert "makes no captions" in capsys.readouterr().err
