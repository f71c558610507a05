"""Synthetic training sets (issue 6) on a tiny pipeline: extractors, bank, fit, marginal sampling,
export layout and loaders, per-image regeneration, resume, two processes, the CLI."""

import json
import os
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from generators import miniworld
from generators.errors import UserError
from generators.files import sha256_file
from generators.run import Run
from generators.synthetic import extract as ex
from generators.synthetic import export as exp
from generators.synthetic import fit as ft
from generators.synthetic import lora
from tests.conftest import tiny_blip

CLASSES = ("finch", "robin", "sparrow")
ROOT = Path(__file__).resolve().parents[1]


def render_birds(root: Path, classes=CLASSES, n=3, seed=7, captions=False):
    """n plain medium/large birds per subclass: DIR/<subclass>/<i>.png (+ mini-world caption sidecars)."""
    truth = {}
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            rng = np.random.default_rng([seed, zlib.crc32(c.encode()), i])
            attrs = miniworld.sample_attributes(rng, kinds=("bird",), subclasses=(c,), scales=("medium", "large"))
            miniworld.render(attrs, 64, seed=i).save(root / c / f"{i:03d}.png")
            if captions:
                (root / c / f"{i:03d}.txt").write_text(attrs.caption + "\n")
            truth[f"{c}/{i:03d}.png"] = attrs
    return truth


def fit_cfg(**kw):
    base = dict(category="bird", steps=4, batch_size=2, rank=4, alpha=4.0, checkpoint_every=2, warmup_steps=1)
    base.update(kw)
    return ft.FitConfig(**base)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    render_birds(root)
    return root


@pytest.fixture(scope="module")
def work(tiny_pipeline_dir, data_dir, tmp_path_factory):
    w = tmp_path_factory.mktemp("work") / "w"
    cfg = fit_cfg(base=str(tiny_pipeline_dir), extractor="miniworld")
    result = ft.fit(data_dir, w, cfg, device="cpu")
    assert result.steps == 4 and len(result.lora_sha256) == 64
    return w


def small_export(**kw):
    base = dict(per_class=3, seed=1, steps=2, batch_size=2)
    base.update(kw)
    return exp.ExportConfig(**base)


def tree(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- extractors and the bank ------------------------------------------------------------------


def test_sidecar_extractor_reads_jsonl_txt_and_captions(tmp_path):
    render_birds(tmp_path, classes=("finch", "robin"), n=2)
    (tmp_path / "attributes.jsonl").write_text(json.dumps({"file": "finch/000.png", "background": "a snowy field", "pose": "perched"}) + "\n")
    (tmp_path / "finch" / "001.txt").write_text("background: the open sea\npose: flying to the left\n")
    (tmp_path / "robin" / "000.txt").write_text("a red bird on the night background, small, facing left, at the top\n")
    _, items, _ = ex.read_class_folders(tmp_path, 32)
    got = ex.SidecarExtractor(tmp_path).extract(items, "bird")
    assert got[0] == ex.Context("a snowy field", "perched")
    assert got[1] == ex.Context("the open sea", "flying to the left")
    assert got[2] == ex.Context("night", "small, facing left, at the top")
    assert got[3] is None  # no sidecar: left to the next extractor
    (tmp_path / "robin" / "001.txt").write_text("just some words\n")
    with pytest.raises(ValueError, match="background: <phrase>"):
        ex.SidecarExtractor(tmp_path).extract(items, "bird")


def test_miniworld_extractor_reads_background_and_pose(tmp_path):
    truth = render_birds(tmp_path, n=2)
    _, items, _ = ex.read_class_folders(tmp_path, 64)
    contexts = ex.MiniWorldExtractor().extract(items, "bird")
    right = [c.background == truth[it.file].background for it, c in zip(items, contexts)]
    assert np.mean(right) >= 0.8
    for it, c in zip(items, contexts):
        assert "facing" in c.pose and it.class_name not in c.pose + c.background


def test_auto_chain_fills_what_sidecars_leave(tmp_path):
    render_birds(tmp_path, classes=("finch",), n=2)
    (tmp_path / "finch" / "000.txt").write_text("background: sky\npose: upright\n")
    _, items, _ = ex.read_class_folders(tmp_path, 64)
    bank = ex.build_bank(items, "bird", ex.make_extractors("auto", tmp_path))
    assert [e.source for e in bank] == ["sidecar", "miniworld"]
    with pytest.raises(ValueError, match="no attributes for finch/001.png"):
        ex.build_bank(items, "bird", ex.make_extractors("sidecar", tmp_path))


def test_captioner_is_asked_the_category_only(tmp_path, monkeypatch):
    tiny_blip(tmp_path / "vlm")
    render_birds(tmp_path / "data", classes=("robin",), n=2)
    _, items, _ = ex.read_class_folders(tmp_path / "data", 64)

    captioner = ex.CaptionerExtractor(str(tmp_path / "vlm"), max_new_tokens=4)
    asked = []
    real_ask = captioner._ask
    monkeypatch.setattr(captioner, "_ask", lambda image, q, prefix: asked.append((q, prefix)) or real_ask(image, q, prefix))
    contexts = captioner.extract(items, "bird")
    assert len(contexts) == 2 and all(isinstance(c.background, str) and isinstance(c.pose, str) for c in contexts)
    assert asked and all("bird" in q and "robin" not in q + p for q, p in asked)
    assert captioner.source() == f"captioner:{tmp_path / 'vlm'}"

    with pytest.raises(UserError) as err:
        ex.CaptionerExtractor(str(tmp_path / "no-such-model"))
    message = str(err.value)
    assert "\n" not in message and "sidecars" in message and "--extractor miniworld" in message


def test_bank_round_trip_and_hand_edit(tiny_pipeline_dir, data_dir, tmp_path):
    w = tmp_path / "w"
    cfg = fit_cfg(base=str(tiny_pipeline_dir), extractor="miniworld")
    r = ft.fit(data_dir, w, cfg, device="cpu", extract_only=True)
    bank_path = w / ex.BANK_FILE
    entries = ex.load_bank(bank_path)
    assert len(entries) == r.n_real == 9 and {e.class_name for e in entries} == set(CLASSES)
    assert all(e.source == "miniworld" for e in entries)
    ex.save_bank(tmp_path / "copy.jsonl", entries)
    assert ex.load_bank(tmp_path / "copy.jsonl") == entries and not ex.bank_was_edited(bank_path)

    lines = bank_path.read_text().splitlines()
    row = json.loads(lines[0])
    row["background"] = "lighthouse"
    lines[0] = json.dumps(row)
    bank_path.write_text("\n".join(lines) + "\n")
    assert ex.bank_was_edited(bank_path)
    logs = []
    r = ft.fit(data_dir, w, cfg, device="cpu", run=Run(log=logs.append))
    assert r.bank_edited and any("edited" in m for m in logs)
    assert ex.load_bank(bank_path)[0].background == "lighthouse"  # the edit survives the fit
    plan = exp.plan_export(w, exp.ExportConfig(per_class=40, seed=0, context="bank"))
    assert any(j.background == "lighthouse" for j in plan.jobs)

    bank_path.write_text(bank_path.read_text() + "not json\n")
    with pytest.raises(ValueError, match=r"bank.jsonl line 10"):
        ex.load_bank(bank_path)


def test_fit_resumes_exactly(tiny_pipeline_dir, data_dir, tmp_path):
    cfg = fit_cfg(base=str(tiny_pipeline_dir), extractor="miniworld", text_encoder_lora=True)
    calls = iter(range(100))
    stopped = ft.fit(data_dir, tmp_path / "a", cfg, device="cpu", run=Run(should_stop=lambda: next(calls) >= 2))
    assert stopped.stopped and stopped.steps == 2 and (tmp_path / "a" / ft.CHECKPOINT_FILE).is_file()
    resumed = ft.fit(data_dir, tmp_path / "a", cfg, device="cpu")
    straight = ft.fit(data_dir, tmp_path / "b", cfg, device="cpu")
    assert resumed.resumed_from == 2 and resumed.lora_sha256 == straight.lora_sha256
    assert not (tmp_path / "a" / ft.CHECKPOINT_FILE).exists()
    with pytest.raises(ValueError, match="steps=4; steps=9 is refused"):
        ft.fit(data_dir, tmp_path / "a", fit_cfg(base=str(tiny_pipeline_dir), extractor="miniworld", steps=9), device="cpu")


class Recorder:
    """A Run that records what the fit reports through the seam (generators/run.py)."""

    def __init__(self, stop_at: int | None = None, preview_every: int = 0):
        self.progress, self.previews, self.polls = [], [], 0
        self.stop_at = stop_at
        self.run = Run(progress=lambda done, total, **info: self.progress.append((done, total)),
                       should_stop=self.should_stop, preview_every=preview_every,
                       preview=lambda step, images, captions: self.previews.append((step, images, captions)))

    def should_stop(self) -> bool:
        self.polls += 1
        return self.stop_at is not None and self.polls > self.stop_at


@pytest.mark.parametrize("stop_at, preview_every", [(None, 0), (None, 2), (2, 0), (1, 3)],
                         ids=["plain", "previews", "stop-resume", "stop-resume-previews"])
def test_fit_follows_the_run_seam(work, data_dir, tiny_pipeline_dir, tmp_path, stop_at, preview_every):
    """progress: total cfg.steps, done rising to it; should_stop: a stopped result whose checkpoint the
    next call resumes; previews: PIL images every preview_every steps (the last step has none); and the
    same LoRA as the module's fit without any of it (`work`, the same settings)."""
    cfg = fit_cfg(base=str(tiny_pipeline_dir), extractor="miniworld")
    reference = json.loads((work / ft.RESULT_FILE).read_text())["lora_sha256"]
    calls = [Recorder(stop_at, preview_every)]
    result = ft.fit(data_dir, tmp_path / "w", cfg, device="cpu", run=calls[0].run)
    if stop_at is not None:
        assert result.stopped and result.steps == stop_at and (tmp_path / "w" / ft.CHECKPOINT_FILE).is_file()
        assert not result.lora_sha256 and calls[0].progress[-1] == (stop_at, cfg.steps)
        calls.append(Recorder(None, preview_every))
        result = ft.fit(data_dir, tmp_path / "w", cfg, device="cpu", run=calls[1].run)
        assert result.resumed_from == stop_at
    assert not result.stopped and result.steps == cfg.steps and result.lora_sha256 == reference
    for rec in calls:
        assert {total for _, total in rec.progress} == {cfg.steps}
        done = [d for d, _ in rec.progress]
        assert done == sorted(done) and rec.polls >= len(done)
    assert calls[-1].progress[-1] == (cfg.steps, cfg.steps)
    previews = [p for rec in calls for p in rec.previews]
    expected = [k for k in range(1, cfg.steps) if preview_every and k % preview_every == 0]
    assert [step for step, _, _ in previews] == expected
    for step, images, captions in previews:
        assert len(images) == len(captions) == len(CLASSES)
        assert all(isinstance(im, Image.Image) and im.size == (32, 32) for im in images)
        assert captions == [f"{c}, step {step}" for c in CLASSES]
    finished = Recorder(None, preview_every)  # a finished fit returns at once, at its total
    assert ft.fit(data_dir, tmp_path / "w", cfg, device="cpu", run=finished.run).lora_sha256 == reference
    assert finished.progress == [(cfg.steps, cfg.steps)] and not finished.previews


def test_lora_loads_in_stock_diffusers(work, tiny_pipeline_dir):
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    state = load_file(str(work / ft.LORA_FILE))
    assert any(k.startswith("unet.") and "to_k" in k for k in state) and any(k.startswith("text_encoder.") for k in state)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir, safety_checker=None, requires_safety_checker=False)
    pipe.load_lora_weights(str(work), weight_name=ft.LORA_FILE)
    info = json.loads((work / ft.RESULT_FILE).read_text())
    assert info["lora_sha256"] == sha256_file(work / ft.LORA_FILE) and info["classes"] == list(CLASSES)


# --- sampling plan ------------------------------------------------------------------------------


def test_bank_context_is_drawn_uniformly_from_all_classes(work):
    n = 900
    plan = exp.plan_export(work, exp.ExportConfig(per_class=n, seed=3, context="bank"))
    bank_files = [e.file for e in plan.bank]
    for c in CLASSES:
        counts = np.array([sum(j.context_source == f for j in plan.jobs if j.class_name == c) for f in bank_files])
        expected = n / len(bank_files)
        chi2 = ((counts - expected) ** 2 / expected).sum()
        assert chi2 < 26.1, (c, counts)  # chi-square, 8 dof, p = 0.001
        by_class = {k: sum(j.context_class == k for j in plan.jobs if j.class_name == c) for k in CLASSES}
        assert min(by_class.values()) > n / len(CLASSES) * 0.8  # other classes' contexts, about a third each
        assert all(j.prompt.startswith(f"a {c} bird on the ") for j in plan.jobs if j.class_name == c)
    same = exp.plan_export(work, exp.ExportConfig(per_class=50, seed=3, context="same-class"))
    assert all(j.context_class == j.class_name for j in same.jobs)
    none = exp.plan_export(work, exp.ExportConfig(per_class=5, seed=3, context="none"))
    assert all(j.background == j.pose == "" and j.prompt == f"a {j.class_name} bird" for j in none.jobs)
    again = exp.plan_export(work, exp.ExportConfig(per_class=n, seed=3, context="bank"))
    assert again.jobs == plan.jobs  # deterministic
    assert len({j.seed for j in plan.jobs}) == len(plan.jobs)


# --- export ---------------------------------------------------------------------------------------


def imagefolder(root: Path):
    """torchvision.datasets.ImageFolder's convention: sorted class folders -> indices, image files per class."""
    extensions = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    class_to_idx = {c: i for i, c in enumerate(classes)}
    samples = [(os.path.join(root, c, f), class_to_idx[c]) for c in classes
               for f in sorted(os.listdir(os.path.join(root, c))) if f.lower().endswith(extensions)]
    return classes, class_to_idx, samples


@pytest.fixture(scope="module")
def exported(work, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "out"
    result = exp.export(work, out, small_export(), device="cpu", zip_archive=True)
    assert result.complete and result.written == 9
    return out


def test_export_layout_metadata_and_both_loaders(exported, tmp_path):
    from datasets import load_dataset

    out = exported
    for name in ("train/metadata.jsonl", "classes.json", "generation_config.json", "README.md"):
        assert (out / name).is_file(), name
    pngs = sorted(p.relative_to(out / "train").as_posix() for p in (out / "train").glob("*/*.png"))
    assert pngs == [f"{c}/{i:06d}.png" for c in CLASSES for i in range(3)]
    rows = [json.loads(line) for line in (out / "train" / "metadata.jsonl").read_text().splitlines()]
    need = {"file_name", "label", "class_name", "prompt", "seed", "background", "pose", "context_source", "base",
            "lora_sha256", "scheduler", "steps", "guidance", "is_synthetic"}
    assert len(rows) == 9 and need <= set(rows[0]) and all(r["is_synthetic"] for r in rows)
    classes = json.loads((out / "classes.json").read_text())
    assert classes["classes"] == list(CLASSES)
    gen_cfg = json.loads((out / "generation_config.json").read_text())
    assert gen_cfg["fingerprint"]["per_class"] == 3 and gen_cfg["context"] == "bank"
    assert "image-classification" in (out / "README.md").read_text()
    assert not list(out.rglob(".*"))  # no temporary files or markers left

    tv_classes, tv_idx, samples = imagefolder(out / "train")
    assert tv_classes == classes["classes"] and tv_idx == classes["class_to_idx"]
    by_file = {r["file_name"]: r for r in rows}
    assert len(samples) == 9
    for path, label in samples:
        rel = Path(path).relative_to(out / "train").as_posix()
        assert by_file[rel]["label"] == label and classes["classes"][label] == by_file[rel]["class_name"]

    ds = load_dataset("imagefolder", data_dir=str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == 9
    for r in ds:
        assert classes["classes"][r["label"]] == r["class_name"] and r["image"].size == (32, 32)

    with zipfile.ZipFile(out.with_name("out.zip")) as zf:
        names = zf.namelist()
    assert "out/train/metadata.jsonl" in names and len([n for n in names if n.endswith(".png")]) == 9


def test_any_single_image_regenerates_exactly(exported, work):
    row = json.loads((exported / "train" / "metadata.jsonl").read_text().splitlines()[4])
    image = exp.regenerate(exported, row["file_name"], work=work, device="cpu")
    with Image.open(exported / "train" / row["file_name"]) as saved:
        assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(image))
        assert json.loads(saved.text["studio"])["seed"] == row["seed"]
    assert row["seed"] == exp.derive_seed(1, row["class_name"], row["index"], "image")


def test_interrupted_export_continues_without_duplicates_or_gaps(work, exported, tmp_path):
    out = tmp_path / "out"
    calls = iter(range(100))
    first = exp.export(work, out, small_export(), device="cpu", run=Run(should_stop=lambda: next(calls) >= 2))
    assert first.stopped and not first.complete and 0 < first.written < 9
    assert not (out / "train" / "metadata.jsonl").exists() and (out / exp.MARKER).is_file()
    (out / "train" / "robin" / ".000002.png.tmp").write_bytes(b"half a file")  # a kill mid-write
    with pytest.raises(FileExistsError, match="other settings"):
        exp.export(work, out, small_export(seed=2), device="cpu")
    reports = []
    second = exp.export(work, out, small_export(), device="cpu", run=Run(progress=lambda *a: reports.append(a)))
    assert second.complete and first.written + second.written == 9
    # images of the total, those already there counted as done: a fixed total, done rising to it
    assert {total for _, total in reports} == {9} and reports == sorted(reports) and reports[-1] == (9, 9)
    a, b = tree(out), tree(exported)
    a.pop("README.md"), b.pop("README.md")
    assert a == b  # same bytes as the uninterrupted export: nothing duplicated, nothing missing
    reports.clear()
    third = exp.export(work, out, small_export(), device="cpu", run=Run(progress=lambda *a: reports.append(a)))
    assert third.complete and third.written == 0 and reports == [(9, 9)]


def test_two_processes_write_the_same_files_as_one(work, exported, tmp_path):
    entry = ["-m", "studio", "synth"]
    out = tmp_path / "out2"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    # accelerate's --cpu launcher runs a single process unless mpirun is set up; --multi_gpu starts
    # torch.distributed.run, and the export joins a gloo (CPU) group because of --device cpu.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *entry, "export",
           "--work", str(work), "--out", str(out), "--per-class", "3", "--seed", "1", "--steps", "2",
           "--batch-size", "2", "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 processes" in proc.stdout
    a, b = tree(out), tree(exported)
    a.pop("README.md"), b.pop("README.md")
    assert a == b


# --- the CLI -----------------------------------------------------------------------------------


def test_cli_fit_export_and_errors(tiny_pipeline_dir, data_dir, tmp_path, capsys):
    from studio.cli import main

    w = tmp_path / "w"
    rc = main(["synth", "fit", str(data_dir), "--category", "bird", "--work", str(w), "--base", str(tiny_pipeline_dir),
                     "--steps", "2", "--batch-size", "2", "--rank", "2", "--device", "cpu", "--no-text-encoder-lora"])
    assert rc == 0 and (w / "bank.jsonl").is_file() and (w / ft.LORA_FILE).is_file()
    rc = main(["synth", "export", "--work", str(w), "--out", str(tmp_path / "o"), "--per-class", "2", "--steps", "1",
                     "--device", "cpu", "--context", "none"])
    assert rc == 0 and len(list((tmp_path / "o" / "train").glob("*/*.png"))) == 6
    capsys.readouterr()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    assert main(["synth", "export", "--work", str(w), "--out", str(tmp_path / "junk"), "--per-class", "1", "--device", "cpu"]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert main(["synth", "export", "--work", str(tmp_path / "nope"), "--out", str(tmp_path / "o3"), "--per-class", "1"]) == 2
    assert "no finished fit" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["synth", "fit", str(tmp_path / "empty"), "--category", "bird", "--work", str(tmp_path / "w2"),
                       "--base", str(tiny_pipeline_dir)]) == 2
    assert "no class folders" in capsys.readouterr().err


def test_learnt_class_tokens_train_resume_and_export(tiny_pipeline_dir, data_dir, tmp_path):
    """class_words='learnt': a token per class, started at its words' mean embedding, trained with
    the LoRA, resumed exactly, saved beside it and loaded by the export (stock load_textual_inversion)."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    cfg = fit_cfg(base=str(tiny_pipeline_dir), extractor="miniworld", class_words="learnt")
    assert ft.prompt_for(cfg, "sea_gull", None) == "a <sea-gull> bird"
    calls = iter(range(100))
    ft.fit(data_dir, tmp_path / "a", cfg, device="cpu", run=Run(should_stop=lambda: next(calls) >= 2))
    resumed = ft.fit(data_dir, tmp_path / "a", cfg, device="cpu")
    straight = ft.fit(data_dir, tmp_path / "b", cfg, device="cpu")
    assert resumed.resumed_from == 2 and resumed.class_tokens_sha256 == straight.class_tokens_sha256 != ""
    vectors = load_file(str(tmp_path / "b" / lora.CLASS_TOKENS_FILE))
    assert sorted(vectors) == ["<finch>", "<robin>", "<sparrow>"]

    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir, safety_checker=None, requires_safety_checker=False)
    table = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    words = pipe.tokenizer("finch", add_special_tokens=False).input_ids
    assert not np.allclose(vectors["<finch>"].numpy(), table[words].mean(0).numpy())  # trained away from its start
    lora.load_lora_into(pipe, tmp_path / "b" / ft.LORA_FILE, fuse=False)
    token_id = pipe.tokenizer.convert_tokens_to_ids("<finch>")
    assert np.allclose(pipe.text_encoder.get_input_embeddings().weight[token_id].detach().numpy(), vectors["<finch>"].numpy())

    out = tmp_path / "out"
    exp.export(tmp_path / "b", out, small_export(per_class=2), device="cpu")
    rows = [json.loads(line) for line in (out / "train" / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(f"<{r['class_name']}>" in r["prompt"] for r in rows)
    config = json.loads((out / "generation_config.json").read_text())
    assert config["class_tokens"]["sha256"] == straight.class_tokens_sha256
    image = exp.regenerate(out, rows[3]["file_name"], work=tmp_path / "b", device="cpu")
    with Image.open(out / "train" / rows[3]["file_name"]) as saved:
        assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(image))
