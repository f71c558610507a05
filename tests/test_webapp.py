"""The web app end to end through gradio_client, against a launched app on the embedded bases
(studio-mini and gan-mini)."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from generators import miniworld  # noqa: E402
from styles.reference import apply_style  # noqa: E402


def style_images(root: Path, style: str, n: int = 4, seed: int = 0) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        s = miniworld.generate(seed, i)
        p = root / f"{i:03d}.png"
        apply_style(style, s.image, seed=i).save(p)
        (root / f"{i:03d}.txt").write_text(s.attributes.caption)
        paths += [str(p), str(root / f"{i:03d}.txt")]
    return paths


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from generators.diffusion import DEFAULT_BASE
    from studio.webapp import create_app, launch

    root = tmp_path_factory.mktemp("studio")
    demo = create_app(root / "museum", str(DEFAULT_BASE), root / "home", device="cpu")  # gan-mini by default
    launch(demo, host="127.0.0.1", port=None, prevent_thread_lock=True, quiet=True)
    try:
        yield demo, root
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(app):
    demo, _ = app
    return Client(demo.local_url, verbose=False)


def test_named_endpoints_and_loopback(app, client):
    demo, _ = app
    assert demo.local_url.startswith("http://127.0.0.1:")
    named = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    for name in ["/museum_learn", "/museum_stop", "/museum_export", "/museum_styles", "/generate", "/reuse_settings", "/jobs",
                 "/job_stop"]:
        assert name in named, name
    assert len(named) >= 4


def test_learn_generate_export_reuse(app, client, tmp_path):
    demo, root = app
    files = [handle_file(p) for p in style_images(tmp_path / "sepia", "sepia")]
    t0 = time.time()
    status, previews = client.predict(files, "sepia", "", "brownish", 4, 2, 2, api_name="/museum_learn")
    took = time.time() - t0
    assert "finished" in status, status
    assert previews  # step-2 previews, then the learnt thumbnail
    museum = json.loads((root / "museum" / "museum.json").read_text())
    assert [s["name"] for s in museum["styles"]] == ["sepia"]
    # Uploads were copied under STUDIO_HOME with their names, captions beside them.
    assert (root / "home" / "uploads" / "museum" / "sepia" / "000.txt").is_file()

    table, heat, export_choices, gen_choices = client.predict(api_name="/museum_styles")
    assert "sepia" in table and "&lt;sepia&gt;" in table and "data:image/png;base64" in table
    assert "No forgetting matrix" in heat

    gallery, downloads, gstatus = client.predict("a red fish on the sea background", "", ["sepia"], 7, 3, 4.0, 2,
                                                 api_name="/generate")
    assert "finished" in gstatus, gstatus
    assert len(gallery) == 2 and len(downloads) == 2
    png = Path(downloads[0])
    with Image.open(png) as im:
        meta = json.loads(im.text["studio"])
    assert meta["seed"] == 7 and meta["steps"] == 3 and meta["styles"] == ["sepia"] and "<sepia>" in meta["prompt"]
    outputs = list((root / "home" / "outputs").rglob("*.png"))
    assert len(outputs) == 2 and all(p.with_suffix(".json").is_file() for p in outputs)

    prompt, negative, styles, seed, steps, guidance = client.predict(handle_file(str(png)), api_name="/reuse_settings")
    assert prompt == "a red fish on the sea background" and styles == ["sepia"] and (seed, steps, guidance) == (7, 3, 4.0)

    for fmt in ("diffusers", "kohya"):
        z = client.predict("sepia", fmt, api_name="/museum_export")
        names = zipfile.ZipFile(z).namelist()
        assert any(n.endswith(".safetensors") for n in names), names
        if fmt == "diffusers":
            assert any(n.endswith("pytorch_lora_weights.safetensors") for n in names)
    assert not any(p.is_dir() for p in (root / "home" / "exports").iterdir())  # only zips are kept

    rows, log = client.predict(None, api_name="/jobs")
    statuses = {r[1]: r[3] for r in rows["data"]} if isinstance(rows, dict) else {r[1]: r[3] for r in rows}
    assert statuses.get("museum") == "finished" and statuses.get("generate") == "finished"
    print(f"\nlearn 4 steps + score on studio-mini: {took:.1f} s")


def test_a_style_is_kept_in_a_prompt_longer_than_the_base_reads(app, client):
    """As `studio generate`: the content is shortened so the style token stays in the window (after the learn test)."""
    from generators import diffusion

    demo, _ = app
    long = ("a red fish on the sea background, small, facing left, at the top right, "
            "a blue star on the grass background, large, facing right, in the center, with a green moon on the snow, at night")
    tok = demo.studio.pipeline(True).tokenizer
    assert len(tok(long).input_ids) > tok.model_max_length
    _, downloads, status = client.predict(long, "", ["sepia"], 0, 2, 4.0, 1, api_name="/generate")
    assert "finished" in status, status
    meta = diffusion.read_settings(downloads[0])
    assert meta.prompt.endswith(", <sepia>") and long.startswith(meta.prompt[: -len(", <sepia>")])
    read = tok(meta.prompt, truncation=True, max_length=tok.model_max_length).input_ids
    assert tok.convert_tokens_to_ids("<sepia>") in read
    job = demo.studio.board.latest("local", panel="generate")
    assert any("shortened to keep the styles" in line for line in job.lines), job.lines


def test_stop_keeps_the_museum_consistent(app, client, tmp_path):
    demo, root = app
    files = [handle_file(p) for p in style_images(tmp_path / "halftone", "halftone", seed=3)]
    job = client.submit(files, "halftone", "", "", 16, 2, 0, api_name="/museum_learn")
    board = demo.studio.board
    deadline = time.time() + 120
    while time.time() < deadline:
        running = [j for j in board.jobs() if j.title == "learn style halftone" and j.status == "running" and j.step >= 2]
        if running:
            break
        time.sleep(0.2)
    assert running, "training never started"
    assert running[0].owner == "local"  # no --auth: the user is "local", not a random session id
    t0 = time.time()
    msg = client.predict(api_name="/museum_stop")
    assert "stop requested" in msg
    status, _ = job.result(timeout=60)
    assert time.time() - t0 < 10
    assert "stopped" in status
    museum = json.loads((root / "museum" / "museum.json").read_text())
    assert "halftone" not in [s["name"] for s in museum["styles"]]
    assert (root / "museum" / "work" / "halftone" / "checkpoint.safetensors").is_file()
    table = client.predict(api_name="/museum_styles")[0]
    assert "halftone: stopped at step" in table
    # Learn again with the same name and no files: it resumes from the checkpoint and finishes.
    status, _ = client.predict(None, "halftone", "", "", 16, 2, 0, api_name="/museum_learn")
    assert "finished" in status, status
    resumed = [j for j in board.jobs() if j.title == "learn style halftone"][-1]
    assert any("resuming halftone from its checkpoint" in line for line in resumed.lines)
    museum = json.loads((root / "museum" / "museum.json").read_text())
    assert "halftone" in [s["name"] for s in museum["styles"]]
    assert not (root / "museum" / "work" / "halftone").exists()


def test_gan_learn_sample_grid(app, client, tmp_path):
    demo, root = app
    folder = tmp_path / "gan"
    folder.mkdir()
    for i in range(4):
        apply_style("pop_art", miniworld.generate(11, i).image, seed=i).save(folder / f"{i}.png")
    files = [handle_file(str(p)) for p in sorted(folder.glob("*.png"))]
    status, previews = client.predict(files, "pop", 4, "pixel", 2, api_name="/gan_learn")
    assert "finished" in status, status
    assert len(previews) == 8
    rows, note, task = client.predict(api_name="/gan_tasks")
    data = rows["data"] if isinstance(rows, dict) else rows
    assert [r[0] for r in data] == ["pop"]
    a = client.predict("pop", 5, 3, 1.0, api_name="/gan_sample")
    b = client.predict("pop", 5, 3, 1.0, api_name="/gan_sample")
    assert len(a) == 3
    same = [Image.open(x["image"]).tobytes() == Image.open(y["image"]).tobytes() for x, y in zip(a, b)]
    assert all(same)  # the same seed gives the same images
    grid = client.predict(3, 4, 1.0, True, api_name="/gan_grid")
    with Image.open(grid) as im:
        assert im.size[1] == 2 * (64 + 2)  # base + one task, 64 px tiles


def test_synthetic_upload_extract_fit_export(app, client, tmp_path):
    demo, root = app
    z = tmp_path / "classes.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for c, style in (("sepia", "sepia"), ("pixel_art", "pixel_art")):
            for i in range(3):
                s = miniworld.generate(21, i)
                p = tmp_path / f"{c}{i}.png"
                apply_style(style, s.image, seed=i).save(p)
                zf.write(p, f"data/{c}/{i}.png")
                zf.writestr(f"data/{c}/{i}.txt", s.attributes.caption)
    summary = client.predict("tinyset", handle_file(str(z)), "", None, api_name="/synth_upload")
    assert "2 classes" in summary
    bank, summary = client.predict("tinyset", "photo", api_name="/synth_extract")
    rows = bank["data"]
    assert len(rows) == 6 and rows[0][4] == "sidecar"
    rows[0][2] = "snow"
    msg = client.predict("tinyset", {"headers": bank["headers"], "data": rows, "metadata": None}, api_name="/synth_save_bank")
    assert "1 edited" in msg
    status, previews = client.predict("tinyset", "photo", 3, 2, 0, "learnt", True, api_name="/synth_fit")
    assert "finished" in status, status
    fit_job = demo.studio.board.latest("local", panel="synth_fit")  # "photo" is not in the embedded base's vocabulary
    assert any("does not know 'photo'" in line for line in fit_job.lines), fit_job.lines
    work = root / "home" / "synthetic" / "tinyset" / "work"
    fit_info = json.loads((work / "fit.json").read_text())
    assert fit_info["bank_edited"] is True and fit_info["config"]["class_words"] == "learnt"
    assert (work / "class_tokens.safetensors").is_file()
    lora = (work / "pytorch_lora_weights.safetensors").read_bytes()
    client.predict("tinyset", "photo", api_name="/synth_extract")  # extracting again keeps the fit
    assert (work / "pytorch_lora_weights.safetensors").read_bytes() == lora
    gallery = client.predict("tinyset", 1, 0, "bank", 2, 2.0, api_name="/synth_preview")
    assert len(gallery) == 2
    estatus, zpath, card = client.predict("tinyset", 2, 1, "bank", 2, 2.0, api_name="/synth_export")
    assert "finished" in estatus, estatus
    names = zipfile.ZipFile(zpath).namelist()
    assert sum(n.endswith(".png") for n in names) == 4
    assert any(n.endswith("train/metadata.jsonl") for n in names) and any(n.endswith("README.md") for n in names)
    assert card.strip()


def test_a_second_user_queues_instead_of_failing(app):
    demo, _ = app
    fresh = [Client(demo.local_url, verbose=False) for _ in range(2)]
    jobs = [c.submit(f"a tree on the grass background {k}", "", [], k, 8, 4.0, 3, api_name="/generate")
            for k, c in enumerate(fresh)]
    results = [j.result(timeout=300) for j in jobs]
    assert all("finished" in r[2] for r in results), [r[2] for r in results]
    # A fresh client (no page loaded) can name a style directly.
    assert fresh[0].predict("sepia", "kohya", api_name="/museum_export").endswith(".zip")
    runs = sorted((j.started, j.ended) for j in demo.studio.board.jobs() if j.title.startswith("generate: a tree"))
    assert len(runs) == 2 and runs[1][0] >= runs[0][1] - 0.05  # one after the other, never both at once


def test_bad_uploads_are_refused(app, client, tmp_path):
    evil = tmp_path / "evil.sh"
    evil.write_text("rm -rf /")
    with pytest.raises(Exception, match="file type"):
        client.predict([handle_file(str(evil))], "evil", "", "", 2, 2, 0, api_name="/museum_learn")
    fake = tmp_path / "fake.png"
    fake.write_text("text, not a png")
    good = style_images(tmp_path / "ok", "sepia")
    cut = tmp_path / "cut.jpg"  # PIL's verify() passes a truncated JPEG; decoding it in full does not
    buffer = tmp_path / "whole.jpg"
    Image.open(good[0]).save(buffer, quality=95)
    cut.write_bytes(buffer.read_bytes()[: buffer.stat().st_size // 2])
    for bad in (fake, cut):  # refused on arrival, not mid-training
        with pytest.raises(Exception, match=f"{bad.name}: not a readable image"):
            client.predict([handle_file(p) for p in good] + [handle_file(str(bad))], "faked", "", "", 2, 2, 0,
                           api_name="/museum_learn")
    with pytest.raises(Exception, match="style name"):
        client.predict([handle_file(p) for p in style_images(tmp_path / "x", "sepia")], "../escape", "", "", 2, 2, 0,
                       api_name="/museum_learn")
    with pytest.raises(Exception, match="no style"):
        client.predict("x", "", ["nope"], 0, 2, 4.0, 1, api_name="/generate")
    demo, root = app
    assert not (root / "escape").exists()


def test_auth_is_required_when_set(app):
    import httpx

    from studio.webapp import create_app, launch

    _, root = app
    demo = create_app(root / "museum", None, root / "home", device="cpu")  # same STUDIO_HOME as the module's app
    launch(demo, port=None, auth=[("ann", "s3cret"), ("bob", "other")], prevent_thread_lock=True, quiet=True)
    try:
        assert httpx.get(demo.local_url + "config").status_code in (401, 403)
        with pytest.raises(Exception):
            Client(demo.local_url, verbose=False, auth=("ann", "wrong"))
        client = Client(demo.local_url, verbose=False, auth=("ann", "s3cret"))
        gallery, _, status = client.predict("a red star on the grass background", "", [], 0, 1, 4.0, 1, api_name="/generate")
        assert "finished" in status
        rows, _ = client.predict(None, api_name="/jobs")
        data = rows["data"] if isinstance(rows, dict) else rows
        assert data[0][1] == "generate" and data[0][5] == "ann"  # the Jobs tab's user column: the login name
        queued = demo.studio.board.submit("generate", "someone's job", "ann")
        bob = Client(demo.local_url, verbose=False, auth=("bob", "other"))
        assert "belongs to ann" in bob.predict(queued.id, api_name="/job_stop") and not queued.stop_requested
        assert "will not start" in client.predict(queued.id, api_name="/job_stop")
    finally:
        demo.close()


def test_a_folder_of_style_folders(app, client, tmp_path):
    demo, root = app
    folder = tmp_path / "styles"
    style_images(folder / "pixel_art", "pixel_art", n=3)
    (folder / "broken").mkdir()
    (folder / "broken" / "a.png").write_text("not a png")
    with pytest.raises(Exception, match="full path"):
        client.predict("styles", 2, False, api_name="/museum_plan")
    plan = client.predict(str(folder), 2, False, api_name="/museum_plan")
    assert "learn   pixel_art" in plan and "2 steps" in plan and "invalid broken" in plan, plan
    status, previews, report = client.predict(str(folder), 2, False, api_name="/museum_ingest")
    assert "finished" in status, status
    assert "pixel_art: learnt as <pixel_art>; 3 images used" in report and "recognised in" in report, report
    assert "broken: invalid" in report, report
    assert len(previews) == 1
    names = [s["name"] for s in json.loads((root / "museum" / "museum.json").read_text())["styles"]]
    assert "pixel_art" in names
    again = client.predict(str(folder), 2, False, api_name="/museum_plan")
    assert "skip    pixel_art" in again, again
