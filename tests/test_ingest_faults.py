"""`studio ingest` against faults and hostile input (issue 33): one clear line and exit 2 for bad
input, nothing written when nothing is learnt, and kills at awkward moments never brick a museum."""

import shutil
import struct
import time
import zlib

import pytest
from PIL import Image

from generators import miniworld
from generators.museum.ingest import plan
from studio.cli import main
from styles.folder import MAX_CAPTION_BYTES, read_style_folder
from styles.museum import Museum
from styles.reference import apply_style


def style_folder(root, style="sepia", n=3, seed=0):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        s = miniworld.generate(seed, i)
        apply_style(style, s.image, seed=i).save(root / f"{i:03d}.png")
        (root / f"{i:03d}.txt").write_text(s.attributes.caption)
    return root


def junk_folder(folder):
    folder.mkdir(parents=True)
    (folder / "notes.pdf").write_bytes(b"%PDF-1.4 not an image")
    (folder / "fake.png").write_bytes(b"this is text, not a png")
    Image.new("RGB", (1, 1), (255, 0, 0)).save(folder / "dot.png")
    return folder


def ingest(src, museum, base, *extra):
    return main(["ingest", str(src), "--museum", str(museum), "--steps", "1", "--base", str(base), "--device", "cpu", *extra])


def snapshot(root):
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def bilevel_png(path, width, height):
    """A valid 1-bit PNG of width × height white pixels: tiny on disk, however large it decodes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" + b"\xff" * ((width + 7) // 8)
    z = zlib.compressobj(9)
    block = row * 1000
    data = b"".join(z.compress(block) for _ in range(height // 1000)) + z.compress(row * (height % 1000)) + z.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def test_a_folder_of_unreadable_files_fails_once_with_exit_2_and_writes_nothing(tiny_pipeline_dir, tmp_path, capsys):
    src = tmp_path / "src"
    junk_folder(src / "junk")
    style_folder(src / "pair", n=2)  # two usable images and one junk file: invalid, and says so
    (src / "pair" / "x.pdf").write_bytes(b"%PDF")
    style_folder(src / ".hidden")
    museum = tmp_path / "new-museum"
    assert ingest(src, museum, tiny_pipeline_dir) == 2
    out, err = capsys.readouterr()
    assert not museum.exists()  # nothing learnt: nothing written
    assert err.count("\n") == 1 and err.startswith("studio: error: 2 style folders not learnt")
    lines = out.splitlines()
    for name in ("notes.pdf", "fake.png", "dot.png", "x.pdf"):
        assert sum(name in line for line in lines) == 1, out  # listed once, on its own line
    pair = next(line for line in lines if "invalid pair" in line)
    assert "2 images" in pair and "has 2 usable images, needs at least 3" in pair
    assert any("skip" in line and ".hidden" in line and "hidden folder" in line for line in lines)
    # one bad folder: its own path and reason in the one line
    shutil.rmtree(src / "pair")
    assert ingest(src, museum, tiny_pipeline_dir) == 2
    err = capsys.readouterr().err
    assert f"{src / 'junk'} not learnt: has 0 usable images, needs at least 3" in err and not museum.exists()


def test_a_missing_folder_says_it_does_not_exist(tiny_pipeline_dir, tmp_path, capsys):
    assert ingest(tmp_path / "no" / "such" / "dir", tmp_path / "m", tiny_pipeline_dir) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "is not a folder" not in err and not (tmp_path / "m").exists()


@pytest.mark.parametrize("line", ["../outside", "/etc", "link", "."])
def test_order_txt_cannot_name_folders_outside_dir(tiny_pipeline_dir, tmp_path, capsys, line):
    src = tmp_path / "src"
    style_folder(src / "inside")
    style_folder(tmp_path / "outside")
    (src / "link").symlink_to(tmp_path / "outside")
    (src / "order.txt").write_text(f"inside\n{line}\n")
    assert ingest(src, tmp_path / "m", tiny_pipeline_dir) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(src / "order.txt") in err and "not inside" in err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("content", ["{}", "[]", '{"base": "x", "styles": [1]}', "\xff\xfe"])
def test_a_damaged_museum_json_is_one_line_naming_it(tiny_pipeline_dir, tmp_path, capsys, content):
    museum = tmp_path / "m"
    museum.mkdir()
    (museum / "museum.json").write_bytes(content.encode("latin-1"))
    style_folder(tmp_path / "src" / "ink")
    assert ingest(tmp_path / "src", museum, tiny_pipeline_dir) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(museum / "museum.json") in err and "restore it from a backup" in err
    assert main(["styles", "--museum", str(museum)]) == 2
    assert (museum / "museum.json").read_bytes() == content.encode("latin-1") and len(list(museum.iterdir())) == 1


def test_leftovers_of_a_first_write_and_of_a_commit_never_brick_the_museum(tiny_pipeline_dir, tmp_path, capsys):
    src = tmp_path / "src"
    style_folder(src / "ink")
    museum = tmp_path / "m"
    museum.mkdir()
    (museum / "museum.json.tmp").write_text("")  # a kill during the first museum.json write
    assert ingest(src, museum, tiny_pipeline_dir) == 0, capsys.readouterr().err
    assert sorted(p.name for p in museum.iterdir()) == ["lora", "museum.json", "styles", "work"]  # the tmp is gone
    assert [s.name for s in Museum.open(museum).styles] == ["ink"]
    # a kill between ink's commit and the removal of its work folder; another style's is a real interruption
    for name in ("ink", "other"):
        (museum / "work" / name).mkdir(parents=True)
        (museum / "work" / name / "checkpoint.safetensors").write_bytes(b"stale")
    Museum.open(museum)
    assert [p.name for p in (museum / "work").iterdir()] == ["other"]
    # a failed ingest leaves an existing museum exactly as it was
    before = snapshot(museum)
    junk_folder(src / "junk")
    assert ingest(src, museum, tiny_pipeline_dir) == 2
    assert snapshot(museum) == before
    (src / "order.txt").write_text("../src\n")
    assert ingest(src, museum, tiny_pipeline_dir) == 2 and snapshot(museum) == before


def test_a_decompression_bomb_is_one_rejected_file(tmp_path):
    folder = style_folder(tmp_path / "bomb")
    bilevel_png(folder / "huge.png", 30000, 30000)  # 900 megapixels: PIL refuses it
    bilevel_png(folder / "big.png", 10000, 10000)  # 100 megapixels: PIL warns
    assert (folder / "huge.png").stat().st_size < 200_000
    style = read_style_folder(folder, 32)
    rejected = dict(style.rejected)
    assert set(rejected) == {"huge.png", "big.png"}
    assert "too large" in rejected["huge.png"] and "DecompressionBombError" in rejected["huge.png"]
    assert "too large" in rejected["big.png"] and "DecompressionBombWarning" in rejected["big.png"]
    assert len(style.images) == 3


def test_a_huge_caption_is_cut_and_reported_quickly(tiny_pipeline_dir, tmp_path):
    from transformers import CLIPTokenizer

    from generators.museum.train import fit_prompt

    folder = style_folder(tmp_path / "long")
    (folder / "001.txt").write_text("a red fish on the sea background " * (1_000_000 // 33))
    start = time.time()
    style = read_style_folder(folder, 32)
    caption = style.images[1].caption
    assert len(caption.encode()) <= MAX_CAPTION_BYTES and caption.startswith("a red fish")
    assert "001.txt" in dict(style.rejected) and "first 4 KB" in dict(style.rejected)["001.txt"]
    tok = CLIPTokenizer.from_pretrained(tiny_pipeline_dir / "tokenizer")
    tok.add_tokens(["<ink>"])
    for text in (caption, "a red fish on the sea background " * (1_000_000 // 33)):  # fit_prompt on its own: linear
        prompt = fit_prompt(tok, text, ["<ink>"])
        ids = tok(prompt).input_ids
        assert len(ids) <= tok.model_max_length and tok.convert_tokens_to_ids("<ink>") in ids
    assert time.time() - start < 3


def test_planning_deletes_nothing(tiny_pipeline_dir, tmp_path):
    src = tmp_path / "src"
    style_folder(src / "ink")
    museum = Museum.open(tmp_path / "m", base=str(tiny_pipeline_dir), create=True)
    work = museum.work_dir("ink")
    work.mkdir(parents=True)
    (work / "checkpoint.safetensors").write_bytes(b"x")
    (work / "hashes.txt").write_text("other images")
    items = plan(src, museum, 32)
    assert [(it.action, it.images) for it in items] == [("learn", 3)] and "starts over" in items[0].reason
    assert (work / "checkpoint.safetensors").exists() and not (tmp_path / "m" / "museum.json").exists()
