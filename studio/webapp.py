"""`studio serve`'s web app: one gr.Blocks with a tab per engine and a jobs panel.

    demo = create_app(museum_dir, base, studio_home, device="cpu")
    launch(demo, host="127.0.0.1", port=7860, auth=("user", "pass"))

Tabs: Museum (styles, learn with live progress and Stop, forgetting heatmap, export),
Generate (prompt -> PNGs with their settings embedded, reuse settings), Lifelong GAN,
Synthetic data, and Jobs (every heavy job: queued, running, finished, stopped, failed, and
its log). Every event has an explicit api_name, so gradio_client can drive all of it.

How long jobs run (the Gradio conventions of Studio): every heavy piece of work is a job on the
app's job board (studio.jobs.JobBoard), which runs one job at a time on its own thread, in the
order they were started. A click first registers a *queued* job (a cheap private event), then
the event claims it, starts it on the board and streams its progress by yielding. The job
belongs to the board, not to the page: closing the tab ends only the streaming; a reopened page
follows the user's latest job of every panel (`Studio.follow_page`, on load) and the Jobs tab
lists them all. Stop sets the job's flag, which the engines check between steps (their
`should_stop` seam), so a stop lands within one step and leaves every store consistent (an
interrupted museum task keeps its checkpoint and resumes next time). Jobs belong to the
logged-in user (`--auth`), else to "local"; only their user may stop them. Each job measures
its seconds per step; the museum's speed on this machine is kept in STUDIO_HOME/logs/timings.json
for the estimate shown before a job starts, and the status shows the time left while it runs.

Safety: `launch` binds 127.0.0.1 unless told otherwise, never shares, and serves files from
STUDIO_HOME/outputs and STUDIO_HOME/exports only (plus Gradio's own cache, which is put
under STUDIO_HOME/tmp); museum images (thumbnails) are sent as images, not as paths. Uploads
are checked for type, size and count and copied under STUDIO_HOME/uploads with sanitized names.
The one server path the browser may name is the Museum tab's folder of style folders (what
`studio ingest DIR` reads): it is only read, never written, like the CLI's.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import time
import zipfile
from pathlib import Path

import gradio as gr

from generators.museum.scores import score_help, score_text, style_metrics
from studio.jobs import Job, JobBoard, duration

# --- limits on what the browser may send --------------------------------------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
CAPTION_SUFFIXES = (".txt",)
MAX_FILE_BYTES = 20 * 2**20  # per uploaded file
MAX_UPLOAD_BYTES = 200 * 2**20  # per request
MAX_STYLE_FILES = 100  # 50 images + their captions
MAX_ZIP_MEMBERS = 2000
MAX_ZIP_BYTES = 500 * 2**20  # uncompressed
MAX_BATCH = 16
MAX_PROMPT = 1000
LAUNCH_MAX_FILE_SIZE = "25mb"
# Heavy work is serialized by the job board (studio.jobs: one job computes at a time, the rest wait in
# its queue, and a job outlives the request that started it); the events only start and follow jobs.
HEAVY = dict(concurrency_limit=None)
LIGHT = dict(concurrency_limit=None)
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
PREVIEW_PROMPTS = (
    "a red star on the grass background, medium, facing right, in the center",
    "a yellow house on the snow background, medium, facing right, in the center",
)
CSS = """
.studio-table table {border-collapse: collapse; width: 100%;}
.studio-table th, .studio-table td {padding: 4px 8px; border-bottom: 1px solid #8884; text-align: left;}
.studio-table img {width: 48px; height: 48px; image-rendering: pixelated; border-radius: 4px;}
.studio-heat td {text-align: center; min-width: 3.5em;}
"""


DEFAULT_CATEGORY = "bird"  # a word in the embedded base's vocabulary (Studio.category_note checks others)


class UserError(ValueError):
    """A problem the user can fix; shown as is."""


def studio_home_dir(studio_home=None) -> Path:
    return Path(studio_home or os.environ.get("STUDIO_HOME") or Path.home() / ".studio").expanduser().resolve()


def safe_file_name(name: str) -> str:
    """A plain file name (no folders, no leading dots) for an uploaded file; its suffix survives."""
    path = Path(Path(str(name)).name)
    suffix = SAFE_NAME.sub("_", path.suffix.lower()) if path.stem else ""
    stem = SAFE_NAME.sub("_", path.stem if path.stem else path.name).lstrip("._")[:120]
    return (stem or "file") + suffix


def check_uploads(files, suffixes: tuple[str, ...], max_count: int, what: str = "files") -> list[tuple[Path, str]]:
    """[(uploaded path, safe name)] after checking type, size and count; raises UserError."""
    if not files:
        return []
    files = files if isinstance(files, (list, tuple)) else [files]
    if len(files) > max_count:
        raise UserError(f"too many {what}: {len(files)} uploaded, at most {max_count}")
    out, total, names = [], 0, set()
    for f in files:
        path = Path(f if isinstance(f, (str, Path)) else getattr(f, "name", f))
        name = safe_file_name(path.name)
        if path.suffix.lower() not in suffixes:
            raise UserError(f"{path.name}: not an accepted file type ({', '.join(suffixes)})")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise UserError(f"{path.name}: {size / 2**20:.1f} MB, larger than {MAX_FILE_BYTES // 2**20} MB")
        total += size
        if total > MAX_UPLOAD_BYTES:
            raise UserError(f"uploads larger than {MAX_UPLOAD_BYTES // 2**20} MB in total")
        if path.suffix.lower() in IMAGE_SUFFIXES:
            _check_decodes(path)
        while name in names:
            name = "_" + name
        names.add(name)
        out.append((path, name))
    return out


def _check_decodes(path: Path, label: str | None = None) -> None:
    """Refuse an upload whose bytes are not a usable image (checked when it arrives, so a bad file
    never reaches a training job); `label` names it in the message (default: its file name)."""
    from styles.folder import open_rgb

    try:
        open_rgb(path)
    except ValueError as err:
        raise UserError(f"{label or path.name}: {err}; re-save it as PNG or JPEG") from None


def safe_extract_zip(zip_path: Path, dest: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Extract the members of a zip whose suffix is accepted, refusing absolute or '..' paths,
    links, and bombs (member count and uncompressed size are capped). Returns the files."""
    out = []
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile:
        raise UserError(f"{Path(zip_path).name} is not a readable zip file") from None
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > MAX_ZIP_MEMBERS:
            raise UserError(f"the zip holds {len(infos)} files; at most {MAX_ZIP_MEMBERS}")
        if sum(i.file_size for i in infos) > MAX_ZIP_BYTES:
            raise UserError(f"the zip unpacks to more than {MAX_ZIP_BYTES // 2**20} MB")
        for info in infos:
            parts = Path(info.filename.replace("\\", "/")).parts
            if info.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                raise UserError(f"the zip member {info.filename!r} points outside its folder")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise UserError(f"the zip member {info.filename!r} is a link")
            if any(p.startswith(".") or p == "__MACOSX" for p in parts) or Path(info.filename).suffix.lower() not in suffixes:
                continue
            if info.file_size > MAX_FILE_BYTES:
                raise UserError(f"the zip member {info.filename!r} is larger than {MAX_FILE_BYTES // 2**20} MB")
            target = dest.joinpath(*[safe_file_name(p) for p in parts])
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            if target.suffix.lower() in IMAGE_SUFFIXES:
                _check_decodes(target, f"the zip member {info.filename!r}")
            out.append(target)
    return out


def zip_folder(folder: Path, out_zip: Path) -> Path:
    tmp = out_zip.with_name(out_zip.name + ".partial")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                zf.write(path, Path(folder.name) / path.relative_to(folder))
    os.replace(tmp, out_zip)
    return out_zip


def _owner(request: gr.Request | None) -> str:
    """Who asked: the logged-in user name (with --auth), else "local" (everyone who can reach the page)."""
    return (getattr(request, "username", None) if request is not None else None) or "local"


def _bar(step: int, total: int, width: int = 24) -> str:
    if not total:
        return ""
    filled = int(round(width * min(step, total) / total))
    return "█" * filled + "░" * (width - filled)


def _status_md(job: Job) -> str:
    lines = [f"**{html.escape(job.summary().splitlines()[0])}**"]
    if job.total:
        lines.append(f"`{_bar(job.step, job.total)}` {html.escape(job.progress_text())}")
    if job.error:
        lines.append(html.escape(job.error))
    recent = job.lines[-3:]
    if recent:
        lines.append("<small>" + "<br>".join(html.escape(x) for x in recent) + "</small>")
    return "\n\n".join(lines)


def _user_error(err: BaseException) -> gr.Error:
    if isinstance(err, gr.Error):
        return err
    if isinstance(err, (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError)):
        return gr.Error(str(err))
    return gr.Error(f"{type(err).__name__}: {err} (the job's log in the Jobs tab has the details)")


def _img_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def _to_pil(images) -> list:
    from PIL import Image

    from generators.gan.stylegan2 import to_uint8

    return [Image.fromarray(a) for a in to_uint8(images)]


def _gan_samples(G, n: int, seed: int) -> list:
    """n images from a generator as it is (training or not): constant noise, no gradients, no RNG used."""
    import torch

    from generators.gan.stylegan2 import seeded_z

    with torch.no_grad():
        dev = next(G.parameters()).device
        return _to_pil(G(seeded_z(n, G.z_dim, seed, dev), noise_mode="const", clamp=True))


def _labelled_grid(rows: list[tuple[str, list]], min_side: int = 64):
    """One row of tiles per (label, images), the label in a left margin."""
    from PIL import Image, ImageDraw

    side = max(min_side, max(im.size[0] for _, ims in rows for im in ims))
    margin, pad = 96, 2
    cols = max(len(ims) for _, ims in rows)
    grid = Image.new("RGB", (margin + cols * (side + pad), len(rows) * (side + pad)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for r, (label, ims) in enumerate(rows):
        y = r * (side + pad)
        draw.text((4, y + side // 2 - 6), label[:14], fill=(0, 0, 0))
        for c, im in enumerate(ims):
            grid.paste(im.resize((side, side), Image.NEAREST), (margin + c * (side + pad), y))
    return grid


class Studio:
    """The app's state and the functions behind its events (usable without a browser)."""

    def __init__(self, museum_dir=None, base=None, studio_home=None, device: str = "cpu", gan_base=None):
        self.home = studio_home_dir(studio_home)
        self.gan_base = str(gan_base) if gan_base else None
        self.museum_dir = Path(museum_dir).expanduser().resolve() if museum_dir else self.home / "museum"
        self.base = str(base) if base else None
        self.device = device
        for sub in ("uploads", "outputs", "exports", "logs", "tmp", "gan", "synthetic"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        self.board = JobBoard(self.home / "logs")
        self._pipe = (None, None)  # (key, pipeline) for generation
        self._evaluator = None

    # --- shared -----------------------------------------------------------------------------
    @property
    def allowed_paths(self) -> list[str]:
        return [str(self.home / "outputs"), str(self.home / "exports")]

    def run_job(self, job: Job, fn, render):
        """Stream render(job) while fn(job) runs; turn failures into messages for the page."""
        try:
            for j in self.board.run(job, fn):
                yield render(j)
        except Exception as err:  # noqa: BLE001
            raise _user_error(err) from None

    def register(self, kind: str, title: str, request: gr.Request | None = None) -> int:
        return self.board.submit(kind, title, _owner(request)).id

    def stop_job(self, job_id, request: gr.Request | None = None) -> str:
        return self.board.stop_job(job_id, _owner(request))

    def stop(self, kind: str, request: gr.Request | None = None) -> str:
        hit = self.board.stop(_owner(request), kind)
        if not hit:
            return "nothing of yours is running or queued here"
        return "stop requested for " + ", ".join(f"job {j.id} ({j.title})" for j in hit) + "; it stops after the current step"

    def evaluator(self):
        if self._evaluator is None:
            try:
                from generators.evaluators import load_evaluator

                self._evaluator = load_evaluator(device="cpu")
            except FileNotFoundError:
                self._evaluator = False
        return self._evaluator or None

    # --- time estimates ---------------------------------------------------------------------
    @property
    def timings_file(self) -> Path:
        return self.home / "logs" / "timings.json"

    def timings(self) -> dict:
        try:
            data = json.loads(self.timings_file.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def record_timing(self, kind: str, s_per_step: float, batch: int, overhead_s: float, source: str) -> None:
        """Remember this machine's speed for `kind` (seconds per step at `batch`, plus the fixed cost of
        loading and scoring) in STUDIO_HOME/logs/timings.json: the next estimate starts from it."""
        data = self.timings()
        data[f"{kind}:{self.device}"] = {"s_per_step": round(float(s_per_step), 4), "batch": int(batch),
                                         "overhead_s": round(max(0.0, float(overhead_s)), 1), "source": source,
                                         "when": time.strftime("%Y-%m-%d %H:%M")}
        tmp = self.timings_file.with_name(self.timings_file.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.timings_file)

    def record_job_timing(self, job: Job, batch: int) -> None:
        """A job that measured at least 3 steps records its speed (the steps after its first)."""
        rate = job.seconds_per_step()
        if rate is None or job._first is None or job.step - job._first[0] < 3 or not job.started:
            return
        overhead = (time.time() - job.started) - rate * (job.step - (job.info.get("resumed_from") or 0))
        self.record_timing(job.kind, rate, batch, overhead, f"job {job.id}")

    def estimate(self, kind: str, steps, batch) -> tuple[float, dict] | None:
        """(seconds, the timing it comes from) for `steps` steps at `batch`, or None if never measured here.
        Seconds per step scale with the batch size (close to linear on a CPU)."""
        t = self.timings().get(f"{kind}:{self.device}")
        try:
            steps, batch = int(steps), int(batch)
            per_step = float(t["s_per_step"]) * batch / max(1, int(t["batch"]))
            return per_step * steps + float(t.get("overhead_s", 0)), dict(t, per_step=per_step)
        except (TypeError, KeyError, ValueError):
            return None

    def estimate_md(self, steps, batch) -> str:
        got = self.estimate("museum", steps, batch)
        if got is None:
            return ("**Time:** not measured on this machine yet. Press **Measure speed** (about half a minute) for an "
                    "estimate, or start: the status shows the time left after the first steps.")
        seconds, t = got
        return (f"**Estimated time:** about {duration(seconds)} ({t['per_step']:.2f} s per step at batch {int(batch)} on "
                f"{html.escape(self.device)}, from {html.escape(str(t.get('source', '?')))} on {html.escape(str(t.get('when', '?')))}; "
                "the status shows the time left while it runs)")

    def museum_measure(self, steps, batch_size, request: gr.Request | None = None) -> str:
        """Time a few training steps of the next style on this machine (the museum's earlier styles
        included: their regularizers cost time), plus loading and scoring; remembered for estimates."""
        try:
            batch = int(batch_size)
            if not 1 <= batch <= 64:
                raise UserError("batch size 1-64")
        except (TypeError, ValueError) as err:
            raise _user_error(err) from None

        def work(job: Job):
            from generators import bases, diffusion, miniworld
            from generators.museum import engine
            from generators.museum.config import MuseumConfig
            from generators.museum.train import learn_style, load_pipe_style_tokens
            from styles.reference import apply_style

            t0 = time.time()
            pipe = diffusion.load_base(self.base, self.device, "fp32")
            museum = self.open_museum()
            cfg = MuseumConfig(steps=4, batch_size=batch, checkpoint_every=10**6)
            states, earlier = [None], []
            if museum is not None and museum.n_tasks:
                load_pipe_style_tokens(pipe, engine.token_vectors(museum, bases.adapter(pipe)))  # as engine.learn
                states += [museum.lora_state(k) for k in range(1, museum.n_tasks + 1)]
                earlier = [{"token": s.token, "captions": museum.manifest(s.name).get("captions", [])} for s in museum.styles]
                first = museum.manifest(museum.styles[0].name)["config"]
                cfg.rank, cfg.alpha = first["rank"], first["alpha"]
            load_s = time.time() - t0
            size = diffusion.base_resolution(pipe)
            images = [apply_style("sepia", miniworld.generate(0, i, size=size).image, seed=i) for i in range(4)]
            learn_style(pipe, "<studio-speed-check>", images, [None] * len(images), cfg, states[-1], states, earlier,
                        progress=job.progress, should_stop=job.should_stop)
            rate = job.seconds_per_step()
            if rate is None or job.should_stop():
                return {"stopped": True}
            t1 = time.time()
            diffusion.generate(pipe, [diffusion.GenerationSettings(prompt=engine.SCORE_PROMPTS[0], steps=cfg.sample_steps,
                                                                   width=size, height=size)])
            score_s = (time.time() - t1) * len(engine.SCORE_PROMPTS)
            self.record_timing("museum", rate, batch, load_s + score_s, "a speed check")
            job.log(f"{rate:.2f} s per training step at batch {batch}; loading {load_s:.0f} s, scoring {score_s:.0f} s")
            return {"s_per_step": rate}

        self.run_sync("museum", f"speed check (batch {batch})", request, work)
        return self.estimate_md(steps, batch)

    # --- following jobs from any page ---------------------------------------------------------
    def render_panel(self, panel: str, job: Job):
        """What a page shows for a job in its panel (the same values its event streams)."""
        if panel == "generate":
            paths = list(job.outputs)
            seeds = [re.search(r"seed(\d+)\.png$", str(p)) for p in paths]
            gallery = [(p, f"seed {m.group(1)}" if m else "") for p, m in zip(paths, seeds)]
            return gallery, paths, _status_md(job), paths
        if panel == "synth_export":
            done = job.result if job.done and job.result else (None, "")
            return _status_md(job), done[0], done[1]
        return _status_md(job), list(job.previews)

    def follow_page(self, request: gr.Request | None = None, poll: float = 0.5, limit_s: float | None = None):
        """A freshly (re)opened page's view of this user's jobs: for every panel, its latest job, streamed
        until it ends (a job outlives the tab that started it; this is how the next tab finds it).
        Yields one value per output of PANELS, gr.skip() where nothing changed."""
        owner = _owner(request)
        start = {p: self.board.latest(owner, panel=p) for p in PANELS}
        sent: dict[str, tuple] = {}
        t0 = time.time()
        first = True
        while True:
            values, active, changed = [], False, False
            for panel, n in PANELS.items():
                job = start[panel]
                newer = self.board.latest(owner, panel=panel)
                if job is None or (newer is not None and newer.id != job.id):  # the page started another: its event shows it
                    values += [gr.skip()] * n
                    continue
                key = (job.version, job.previews_version)
                if sent.get(panel) == key:
                    values += [gr.skip()] * n
                else:
                    out = list(self.render_panel(panel, job))
                    if panel in ("museum", "gan", "synth_fit") and sent.get(panel, (None, None))[1] == job.previews_version:
                        out[1] = gr.skip()  # the gallery only when its images changed
                    sent[panel], changed = key, True
                    values += out
                active |= not job.done
            if changed or first:
                yield tuple(values)
            first = False
            if not active or (limit_s is not None and time.time() - t0 > limit_s):
                return
            time.sleep(poll)

    # --- museum -----------------------------------------------------------------------------
    def base_name(self) -> str:
        from generators.diffusion import base_name

        return base_name(self.base)

    def open_museum(self, create: bool = False):
        from styles.museum import Museum

        if not create and not (self.museum_dir / "museum.json").exists():
            return None
        return Museum.open(self.museum_dir, base=self.base_name(), create=create)

    def style_names(self) -> list[str]:
        try:
            museum = self.open_museum()
        except ValueError:
            return []
        return [s.name for s in museum.styles] if museum else []

    def interrupted(self) -> list[dict]:
        """Tasks stopped mid-way whose checkpoint and uploaded images are still here (not a style the
        museum already holds: a kill between its commit and the clean-up leaves its work folder)."""
        out = []
        work = self.museum_dir / "work"
        if not work.is_dir():
            return out
        from safetensors import safe_open

        committed = set(self.style_names())
        for d in sorted(work.iterdir()):
            ckpt = d / "checkpoint.safetensors"
            if d.name in committed or not ckpt.is_file():
                continue
            try:
                with safe_open(str(ckpt), "pt") as fh:
                    meta = fh.metadata() or {}
                steps = json.loads(meta.get("config", "{}")).get("steps")
                out.append({"name": d.name, "step": int(meta.get("step", 0)), "steps": steps,
                            "images_kept": (self.home / "uploads" / "museum" / d.name).is_dir()})
            except Exception:  # noqa: BLE001 - a half-written checkpoint is simply not offered
                continue
        return out

    def styles_html(self) -> str:
        try:
            museum = self.open_museum()
        except ValueError as err:
            return f"<p>{html.escape(str(err))}</p>"
        head = f"<p>Museum <code>{html.escape(str(self.museum_dir))}</code> on base <code>{html.escape(self.base_name())}</code>"
        if museum is None or not museum.styles:
            rows = "<p>No styles learnt yet: upload 3-50 images below and press <b>Learn style</b>.</p>"
        else:
            body = []
            for s in museum.styles:
                thumb = museum.style_dir(s.name) / "thumb.png"
                img = f'<img src="{_img_data_uri(thumb)}" alt="{html.escape(s.name)}">' if thumb.is_file() else ""
                try:
                    manifest = museum.manifest(s.name)
                except Exception:  # noqa: BLE001 - an unreadable manifest only costs the score
                    manifest = {}
                metrics = style_metrics(museum, s)
                steps = (manifest.get("result") or {}).get("steps", "")
                body.append(f"<tr><td>{img}</td><td>{html.escape(s.name)}</td><td><code>{html.escape(s.token)}</code></td>"
                            f"<td>{s.images}</td><td>{steps}</td><td>{html.escape(s.created)}</td>"
                            f"<td>{html.escape(score_text(metrics))}</td></tr>")
            rows = ("<table><thead><tr><th></th><th>name</th><th>token</th><th>images</th><th>steps</th><th>date</th>"
                    "<th>how well it is drawn</th></tr></thead><tbody>" + "".join(body) + "</tbody></table>"
                    f"<p><small>{html.escape(score_help())}</small></p>")
        head += f": {len(museum.styles) if museum else 0} styles.</p>"
        stopped = self.interrupted()
        if stopped:
            items = "".join(
                f"<li>{html.escape(t['name'])}: stopped at step {t['step']}/{t['steps']}"
                + (" - press <b>Learn style</b> with this name and no files to resume</li>" if t["images_kept"]
                   else " - upload the same images with this name to resume</li>")
                for t in stopped)
            rows += f"<p>Interrupted tasks (their checkpoints are kept):</p><ul>{items}</ul>"
        return f'<div class="studio-table">{head}{rows}</div>'

    def forgetting_html(self) -> str:
        """The museum's forgetting matrix as a heatmap: forgetting*.json in the museum folder,
        {"styles": [names], "matrix": [[score of style j after learning task i]]}, or the file
        bench/forgetting.py writes ({"styles", "results": {method: {"matrix"}}}: its "full" method)."""
        files = sorted(self.museum_dir.glob("forgetting*.json")) if self.museum_dir.is_dir() else []
        if not files:
            return ("<p>No forgetting matrix in this museum yet (a benchmark run writes "
                    "<code>forgetting.json</code> into the museum: how well each style is drawn after each later task).</p>")
        try:
            data = json.loads(files[0].read_text())
            names = [str(x) for x in data["styles"]]
            if "results" in data:
                data = data["results"].get("full") or next(iter(data["results"].values()))
            # None or NaN: style j not learnt yet after task i
            matrix = [[None if v is None or v != v else float(v) for v in row] for row in data["matrix"]]
        except (ValueError, TypeError, AttributeError, KeyError, StopIteration) as err:
            return f"<p>{html.escape(files[0].name)} is not a readable forgetting matrix ({html.escape(str(err))}).</p>"
        values = [v for row in matrix for v in row if v is not None]
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
        body = []
        for i, row in enumerate(matrix):
            cells = []
            for v in row:
                if v is None:
                    cells.append("<td></td>")
                    continue
                x = 0.5 if hi == lo else (v - lo) / (hi - lo)
                color = f"hsl({int(120 * x)}, 70%, {75 - 20 * x:.0f}%)"
                cells.append(f'<td style="background:{color};color:#000">{v:.2f}</td>')
            label = html.escape(names[i]) if i < len(names) else str(i + 1)
            body.append(f"<tr><th>after {label}</th>{''.join(cells)}</tr>")
        return (f'<div class="studio-table studio-heat"><p>{html.escape(files[0].name)}: rows = after learning task i, '
                f"columns = style j (higher is better; red = forgotten).</p><table><thead><tr><th></th>{head}</tr></thead>"
                f"<tbody>{''.join(body)}</tbody></table></div>")

    def museum_refresh(self):
        names = self.style_names()
        return (self.styles_html(), self.forgetting_html(),
                gr.update(choices=names, value=names[-1] if names else None),
                gr.update(choices=names))

    def _stage_style(self, files, name: str, token: str, description: str) -> tuple[Path, bool]:
        """The style's upload folder (new files replace old ones); (folder, resuming)."""
        from styles.folder import MAX_IMAGES, check_style_name

        name = check_style_name((name or "").strip())
        token = (token or "").strip()
        if token and (len(token) > 48 or not re.fullmatch(r"<?[A-Za-z0-9_-]+>?", token)):
            raise UserError("a token is 1-48 letters, digits, '_' or '-', optionally in <angle brackets>")
        if len(description or "") > 500:
            raise UserError("the description is limited to 500 characters")
        museum = self.open_museum()
        if museum is not None and museum.has(name):
            raise UserError(f"the museum already holds a style named {name}; pick another name "
                            f"(or `studio ingest --new-version` to learn a second version beside it)")
        folder = self.home / "uploads" / "museum" / name
        uploads = check_uploads(files, IMAGE_SUFFIXES + CAPTION_SUFFIXES, 2 * MAX_IMAGES, "style files")
        n_images = sum(Path(safe).suffix in IMAGE_SUFFIXES for _, safe in uploads)
        if n_images > MAX_IMAGES:
            raise UserError(f"too many style images: {n_images} uploaded, at most {MAX_IMAGES}")
        if not uploads:
            if (folder.is_dir() and (self.museum_dir / "work" / name / "checkpoint.safetensors").is_file()):
                return folder, True
            raise UserError("upload 3-50 images of the style (png, jpg, webp; optional .txt captions beside them)")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for src, safe in uploads:
            shutil.copyfile(src, folder / safe)
        settings = {"name": name}
        if token:
            settings["token"] = token if token.startswith("<") else f"<{token}>"
        if description:
            settings["description"] = description
        (folder / "style.toml").write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
        return folder, False

    def museum_learn(self, files, name, token, description, steps, batch_size, preview_every, job_id=None,
                     request: gr.Request | None = None):
        """Learn a style from uploaded images into the museum; streams (status, previews)."""
        job = self.board.claim(job_id, "museum", f"learn style {name}", _owner(request))
        job.panel = "museum"
        try:
            folder, resuming = self._stage_style(files, name, token, description)
            steps, batch_size, preview_every = int(steps), int(batch_size), int(preview_every or 0)
            if not 1 <= steps <= 100_000 or not 1 <= batch_size <= 64 or preview_every < 0:
                raise UserError("steps must be 1-100000, batch size 1-64 and preview every at least 0")
        except Exception as err:  # noqa: BLE001
            self.board.fail(job, str(err))
            raise _user_error(err) from None
        guess = self.estimate("museum", steps, batch_size)
        job.estimate_s = guess[0] if guess else None

        def work(job: Job):
            from generators import diffusion
            from generators.museum import engine
            from generators.museum.config import MuseumConfig
            from generators.museum.train import style_prompt
            from styles.folder import read_style_folder

            museum = self.open_museum(create=True)
            style = read_style_folder(folder, diffusion.resolution_of(self.base), name=name)
            cfg = MuseumConfig(steps=steps, batch_size=batch_size, checkpoint_every=max(1, min(50, steps // 4 or 1)))
            ckpt = museum.work_dir(style.name) / "checkpoint.safetensors"
            hashes = museum.work_dir(style.name) / "hashes.txt"
            if ckpt.is_file() and (not hashes.is_file() or hashes.read_text().split() != style.hashes):
                job.log(f"the interrupted run of {style.name} used other images: starting over")
                shutil.rmtree(museum.work_dir(style.name))
            if ckpt.is_file():  # resume with the config the task was started with
                from safetensors import safe_open

                with safe_open(str(ckpt), "pt") as fh:
                    cfg = MuseumConfig.from_dict(json.loads(fh.metadata()["config"]))
                job.log(f"resuming {style.name} from its checkpoint ({cfg.steps} steps in all)")
            elif resuming:
                raise UserError(f"no checkpoint left for {style.name}; upload its images again")
            if museum.n_tasks:
                first = museum.manifest(museum.styles[0].name)["config"]
                cfg.rank, cfg.alpha = first["rank"], first["alpha"]
            job.log(f"{len(style.images)} images ({len(style.rejected)} rejected) -> token {style.token}; "
                    f"{cfg.steps} steps of batch {cfg.batch_size} (images x repeats = {cfg.steps * cfg.batch_size} samples)")
            for f, why in style.rejected:
                job.log(f"rejected {f}: {why}")

            def progress(step, total, **info):
                job.progress(step, total, **info)
                if preview_every and step % preview_every == 0 and step < total:
                    job.log(f"step {step}/{total}" + (f": loss {info['loss']:.4f}" if "loss" in info else ""))

            def preview(step, pipe, token):
                if preview_every and step % preview_every == 0 and step < cfg.steps:
                    token_now = token
                    size = diffusion.base_resolution(pipe)
                    settings = [diffusion.GenerationSettings(prompt=style_prompt(p, [token_now]), seed=i,
                                                             steps=min(cfg.sample_steps, 20), guidance=cfg.guidance,
                                                             width=size, height=size)
                                for i, p in enumerate(PREVIEW_PROMPTS)]
                    images = diffusion.generate(pipe, settings)
                    job.set_previews([(im, f"step {step}") for im in images])

            manifest = engine.learn(museum, style, cfg, self.base, self.device, progress=progress,
                                    should_stop=job.should_stop, evaluator=self.evaluator(), preview=preview)
            if manifest.get("stopped"):
                job.log(f"stopped at step {manifest['result']['steps']}/{cfg.steps}; the checkpoint is kept: "
                        "press Learn style again with the same name (no files needed) to resume")
            else:
                thumb = museum.style_dir(style.name) / "thumb.png"
                if thumb.is_file():  # as an image, not a path: the museum folder is not served
                    from PIL import Image

                    with Image.open(thumb) as im:
                        job.set_previews([(im.convert("RGB"), f"{style.name}: learnt")])
                job.log(f"learnt {style.name} as {style.token} in {manifest['timings']['total_seconds']:.0f} s, "
                        f"final loss {manifest['result']['final_loss']:.4f}; {score_text(manifest.get('metrics'))}")
            self.record_job_timing(job, cfg.batch_size)
            return manifest

        yield from self.run_job(job, work, lambda j: (_status_md(j), list(j.previews)))

    # --- museum: a folder of style folders (the web app's `studio ingest DIR`) --------------------
    def _ingest_plan(self, folder, steps, new_version):
        """(root, museum, plan items, steps per item) for a folder on this machine, as `studio ingest` plans it."""
        from dataclasses import replace

        from generators import diffusion
        from generators.museum.config import MuseumConfig
        from generators.museum.ingest import plan

        text = str(folder or "").strip()
        if not text:
            raise UserError("type the path of a folder of style folders on this machine (one sub-folder of images per style)")
        root = Path(text).expanduser()
        if not root.is_absolute():
            raise UserError(f"{text}: give the folder's full path on this machine (e.g. /data/styles or ~/styles)")
        steps = int(steps or 0)
        if not 0 <= steps <= 100_000:
            raise UserError("steps must be 0 (each folder's style.toml, else 300) to 100000")
        museum = self.open_museum(create=True)
        items = plan(root.resolve(), museum, diffusion.resolution_of(self.base), bool(new_version))
        default = MuseumConfig()
        rank = {}
        if museum.n_tasks:
            first = museum.manifest(museum.styles[0].name)["config"]
            rank = {"rank": first["rank"], "alpha": first["alpha"]}
        configs = {it.name: replace(default, **rank, steps=steps or it.style.steps or default.steps)
                   for it in items if it.style is not None}
        return root, museum, items, configs

    def _plan_lines(self, root, items, configs) -> list[str]:
        lines = [f"plan for {root} -> museum {self.museum_dir} (base {self.base_name()}):"]
        for it in items:  # as `studio ingest` prints it
            what = f"{it.action:7s} {it.name:24s}"
            usable = getattr(it, "images", len(it.style.images) if it.style else None)
            if usable is not None:
                what += f" {usable:3d} images"
            if it.action in ("learn", "resume"):
                what += f", {configs[it.name].steps} steps"
            if it.rejected:
                what += f", {len(it.rejected)} files rejected"
            lines.append("  " + what + (f"  ({it.reason})" if it.reason else ""))
            if it.action == "invalid":
                lines += [f"      rejected {f}: {why}" for f, why in it.rejected]
        todo = [it for it in items if it.action in ("learn", "resume")]
        got = self.estimate("museum", sum(configs[it.name].steps for it in todo), configs[todo[0].name].batch_size) \
            if todo else None
        if got is not None:
            lines.append(f"estimated time: about {duration(got[0] + got[1].get('overhead_s', 0) * (len(todo) - 1))}")
        return lines

    def museum_plan(self, folder, steps, new_version) -> str:
        """The plan `studio ingest DIR` prints: what each style folder will do (learn, resume, skip, refuse, invalid)."""
        try:
            root, _, items, configs = self._ingest_plan(folder, steps, new_version)
        except Exception as err:  # noqa: BLE001
            raise _user_error(err) from None
        return "```\n" + "\n".join(self._plan_lines(root, items, configs)) + "\n```"

    def museum_ingest(self, folder, steps, new_version, job_id=None, request: gr.Request | None = None):
        """Learn every style folder of a folder on this machine, in order (sorted, or its order.txt), with the
        plan and the report of `studio ingest`; streams (status, previews, plan and report)."""
        job = self.board.claim(job_id, "museum", f"ingest {Path(str(folder or '?')).name}", _owner(request))
        job.panel = "museum"
        try:
            root, museum, items, configs = self._ingest_plan(folder, steps, new_version)
        except Exception as err:  # noqa: BLE001
            self.board.fail(job, str(err))
            raise _user_error(err) from None
        todo = [it for it in items if it.action in ("learn", "resume")]
        plan_lines = self._plan_lines(root, items, configs)
        total = sum(configs[it.name].steps for it in todo)
        guess = self.estimate("museum", total, configs[todo[0].name].batch_size) if todo else None
        job.estimate_s = guess[0] if guess else None
        report: list[str] = []

        def work(job: Job):
            from generators.museum import engine

            job.log("\n".join(plan_lines))
            evaluator, done, thumbs = self.evaluator(), 0, []
            for k, it in enumerate(todo, 1):
                cfg = configs[it.name]

                def progress(step, _total, **info):
                    job.progress(done + step, total, style=f"{it.name} ({k}/{len(todo)})", **info)

                manifest = engine.learn(museum, it.style, cfg, self.base, self.device, progress=progress,
                                        should_stop=job.should_stop, evaluator=evaluator)
                if manifest.get("stopped"):
                    report.append(f"stopped during {it.name} at step {manifest['result']['steps']}: the museum holds the "
                                  "styles learnt before it; press Learn all again to resume")
                    job.log(report[-1])
                    return {"stopped": True}
                done += cfg.steps
                r = manifest["result"]
                report.append(f"  {it.name}: learnt as {manifest['token']}; {len(manifest['images'])} images used, "
                              f"{len(manifest['rejected'])} rejected, {r['steps']} steps"
                              + (f" (resumed at {r['resumed_from']})" if r.get("resumed_from") else "")
                              + f", {manifest['timings']['total_seconds']:.0f} s, final loss {r['final_loss']:.4f}, "
                              + score_text(manifest.get("metrics")))
                report.extend(f"    rejected {f['file']}: {f['reason']}" for f in manifest["rejected"])
                thumb = museum.style_dir(it.name) / "thumb.png"
                if thumb.is_file():
                    from PIL import Image

                    with Image.open(thumb) as im:
                        thumbs.append((im.convert("RGB"), f"{it.name}: learnt"))
                    job.set_previews(list(thumbs))
            skipped = [f"  {it.name}: {it.action} - {it.reason}" for it in items if it.action in ("skip", "refuse", "invalid")]
            report[:0] = ["report:"] + skipped
            job.log("\n".join(report))
            if todo:
                self.record_job_timing(job, configs[todo[0].name].batch_size)
            return {"learnt": len(todo)}

        def render(j: Job):
            text = "\n".join(plan_lines + ([""] + report if report else []))
            return _status_md(j), list(j.previews), f"```\n{text}\n```"

        yield from self.run_job(job, work, render)

    def museum_export(self, name, fmt):
        from generators.museum.export import export_style

        if fmt not in ("diffusers", "kohya"):
            raise gr.Error("format must be diffusers or kohya")
        try:
            museum = self.open_museum()
            if museum is None:
                raise UserError("the museum is empty: learn a style first")
            museum.style(name or "")
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = self.home / "exports" / f"{name}-{fmt}-{stamp}"
            export_style(museum, name, fmt, out)
            path = zip_folder(out, out.with_suffix(".zip"))
            shutil.rmtree(out, ignore_errors=True)
            return str(path)
        except Exception as err:  # noqa: BLE001
            raise _user_error(err) from None

    # --- generate ---------------------------------------------------------------------------
    def pipeline(self, with_museum: bool):
        """The generation pipeline, cached until the museum changes."""
        from generators import diffusion

        index = self.museum_dir / "museum.json"
        stamp = index.stat().st_mtime_ns if with_museum and index.exists() else None
        key = (self.base, self.device, stamp)
        if self._pipe[0] != key:
            self._pipe = (None, None)
            if stamp is not None:
                from generators.museum.engine import load_museum_pipeline

                pipe = load_museum_pipeline(self.open_museum(), self.base, self.device, "fp32")
            else:
                pipe = diffusion.load_base(self.base, self.device, "fp32")
            self._pipe = (key, pipe)
        return self._pipe[1]

    def generate(self, prompt, negative, styles, seed, steps, guidance, batch, job_id=None,
                 request: gr.Request | None = None):
        """Draw `batch` images (seeds seed, seed+1, ...); streams (gallery, files, status, paths)."""
        job = self.board.claim(job_id, "generate", f"generate: {str(prompt)[:40]}", _owner(request))
        job.panel = "generate"
        try:
            prompt, negative = str(prompt or "").strip(), str(negative or "")
            styles = [styles] if isinstance(styles, str) else list(styles or [])
            seed, steps, batch, guidance = int(seed), int(steps), int(batch), float(guidance)
            if not prompt:
                raise UserError("write a prompt")
            if len(prompt) > MAX_PROMPT or len(negative) > MAX_PROMPT:
                raise UserError(f"prompts are limited to {MAX_PROMPT} characters")
            if not (0 <= seed < 2**32 and 1 <= steps <= 200 and 1 <= batch <= MAX_BATCH and 0 <= guidance <= 30):
                raise UserError(f"seed 0..2^32-1, steps 1-200, batch 1-{MAX_BATCH}, guidance 0-30")
            known = self.style_names()
            unknown = [s for s in styles if s not in known]
            if unknown:
                raise UserError(f"no style {unknown[0]!r} in the museum (styles: {', '.join(known) or 'none yet'})")
        except Exception as err:  # noqa: BLE001
            self.board.fail(job, str(err))
            raise _user_error(err) from None

        def work(job: Job):
            from generators import diffusion

            with_museum = bool(known)
            pipe = self.pipeline(with_museum)
            full = prompt
            if styles:
                from generators.museum.engine import museum_prompt
                from generators.museum.train import fit_prompt

                museum = self.open_museum()
                # The pipeline truncates at the text encoder's window, which would cut the style tokens off
                # the end of a long prompt: shorten the content instead, as training and `studio generate` do.
                full = fit_prompt(pipe.tokenizer, prompt, [museum.style(n).token for n in styles])
                whole = museum_prompt(museum, prompt, styles)
                if full != whole:
                    job.log(f"the prompt is {len(pipe.tokenizer(whole).input_ids)} tokens with its styles and the base "
                            f"reads {pipe.tokenizer.model_max_length}; shortened to keep the styles")
            size = diffusion.base_resolution(pipe)
            out_dir = self.home / "outputs" / time.strftime("%Y-%m-%d")
            out_dir.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%H%M%S")
            job.log(f"prompt: {full}")
            for i in range(batch):
                if job.should_stop():
                    break
                s = diffusion.GenerationSettings(prompt=full, negative_prompt=negative, seed=seed + i, steps=steps,
                                                 guidance=guidance, width=size, height=size, base=self.base_name(),
                                                 scheduler=type(pipe.scheduler).__name__, styles=tuple(styles))
                image = diffusion.generate(pipe, [s])[0]
                path = out_dir / f"{stamp}-job{job.id}-seed{s.seed}.png"
                diffusion.save_with_settings(image, s, path)
                job.add_output(str(path))
                job.progress(i + 1, batch)
            job.log(f"wrote {len(job.outputs)} images to $STUDIO_HOME/{out_dir.relative_to(self.home)}")
            return list(job.outputs)

        yield from self.run_job(job, work, lambda j: self.render_panel("generate", j))

    def settings_values(self, path):
        from generators.diffusion import read_settings

        try:
            s = read_settings(path)
        except Exception as err:  # noqa: BLE001
            raise _user_error(err if isinstance(err, ValueError) else UserError(f"not a PNG with Studio settings ({err})")) from None
        prompt = s.prompt
        names = self.style_names()
        styles = [n for n in s.styles if n in names]
        if s.styles:  # the stored prompt carries the style tokens: show the prompt as typed
            try:
                museum = self.open_museum()
                for n in styles:
                    prompt = prompt.replace(f", {museum.style(n).token}", "").replace(museum.style(n).token, "").strip()
            except Exception:  # noqa: BLE001
                pass
        return prompt, s.negative_prompt, styles, s.seed, s.steps, s.guidance

    def reuse_settings(self, file):
        """Fill the form from a PNG written by Studio (its embedded settings)."""
        if not file:
            raise gr.Error("upload a PNG made by Studio")
        check_uploads([file], (".png",), 1, "images")
        return self.settings_values(file)

    def reuse_selected(self, paths, index):
        """Fill the form from the picked gallery image (by index into this session's outputs)."""
        if index is None or not paths or not 0 <= int(index) < len(paths):
            raise gr.Error("pick an image in the gallery first")
        path = Path(paths[int(index)]).resolve()
        if not path.is_relative_to(self.home / "outputs"):
            raise gr.Error("that image is not one of Studio's outputs")
        return self.settings_values(path)

    # --- lifelong GAN -----------------------------------------------------------------------
    @property
    def gan_store(self) -> Path:
        return self.home / "gan" / "store"

    def gan_refresh(self):
        """(tasks table, note on unfinished tasks, task dropdown update)."""
        from generators.gan.lifelong import TaskStore, list_tasks, unfinished_tasks

        rows, names, note = [], [], ""
        try:
            if TaskStore(self.gan_store).exists():
                for t in list_tasks(self.gan_store):
                    rows.append([t["name"], t["index"], t["images"], t["iters"], t["rank"],
                                 round(t["storage_percent_of_G"], 3), round(t["train_s"]), t["created_at"]])
                    names.append(t["name"])
            else:
                note = "No tasks yet: upload about 10 images of a new domain and press **Learn task**."
            stopped = unfinished_tasks(self.gan_store)
            if stopped:
                note += "\n\nInterrupted (checkpoint kept; press Learn task with the same name and no files to resume): " + \
                        ", ".join(f"{html.escape(t['name'])} at {t['step']}/{t['iters']}" for t in stopped)
        except (ValueError, FileNotFoundError) as err:
            note = html.escape(str(err))
        return rows, note, gr.update(choices=names, value=names[-1] if names else None)

    def gan_learn(self, files, name, iters, mode_seeking, preview_every, job_id=None, request: gr.Request | None = None):
        """Learn a GAN task from uploaded images; streams (status, previews)."""
        from generators.gan.lifelong import check_task_name

        job = self.board.claim(job_id, "gan", f"learn GAN task {name}", _owner(request))
        job.panel = "gan"
        try:
            name = check_task_name(str(name or "").strip())
            iters, preview_every = int(iters), int(preview_every or 0)
            if not 1 <= iters <= 100_000 or preview_every < 0:
                raise UserError("iterations must be 1-100000 and preview every at least 0")
            if mode_seeking not in ("perceptual", "pixel", "off"):
                raise UserError("mode seeking is perceptual, pixel or off")
            folder = self.home / "uploads" / "gan" / name
            uploads = check_uploads(files, IMAGE_SUFFIXES, 50, "task images")
            if uploads:
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                for src, safe in uploads:
                    shutil.copyfile(src, folder / safe)
            elif not (folder.is_dir() and (self.gan_store / "work" / name).is_dir()):
                raise UserError("upload the task's images (about 10; png, jpg, webp)")
        except Exception as err:  # noqa: BLE001
            self.board.fail(job, str(err))
            raise _user_error(err) from None

        def work(job: Job):
            from generators.gan.lifelong import ModeSeekingConfig, TrainConfig, learn_task

            train = TrainConfig(iters=iters, checkpoint_every=max(1, min(100, iters // 4 or 1)))
            ms = ModeSeekingConfig(enabled=mode_seeking != "off", distance="pixel" if mode_seeking == "pixel" else "perceptual")
            last = [0]

            def preview(step, G):
                if preview_every and step - last[0] >= preview_every and step < iters:
                    last[0] = step
                    job.set_previews([(im, f"iteration {step}") for im in _gan_samples(G, 8, 0)])

            job.log(f"learning {name} from {folder.name}: {iters} iterations, mode seeking {mode_seeking}")
            meta = learn_task(self.gan_store, name, folder, base=self.gan_base, train=train, mode_seeking=ms,
                              device=self.device, progress=job.progress, should_stop=job.should_stop, preview=preview)
            if meta.get("stopped"):
                job.log(f"stopped at iteration {meta['step']}/{meta['iters']}; the checkpoint is kept: press Learn task "
                        "again with the same name (no files needed) to resume")
            else:
                from generators.gan.lifelong import load_task_generator

                G, _ = load_task_generator(self.gan_store, name, base=self.gan_base, device=self.device)
                job.set_previews([(im, f"{name}: seed 0 #{i}") for i, im in enumerate(_gan_samples(G, 8, 0))])
                job.log(f"learnt {name}: {len(meta['images'])} images, {meta['storage']['params']} stored parameters "
                        f"({meta['storage']['percent_of_G']:.2f} % of G), {meta['timings']['train_s']:.0f} s")
            return meta

        yield from self.run_job(job, work, lambda j: (_status_md(j), list(j.previews)))

    def run_sync(self, kind: str, title: str, request, fn):
        """A short heavy job (sampling, previews): registered, run under the heavy lock, its result returned."""
        job = self.board.submit(kind, title, _owner(request))
        for _ in self.run_job(job, fn, lambda j: None):
            pass
        return job.result

    def gan_sample(self, name, seed, n, truncation, request: gr.Request | None = None):
        """n samples of a task from `seed` (the same seed gives the same images)."""
        seed, n, truncation = int(seed), int(n), float(truncation)
        if not (0 <= seed < 2**32 and 1 <= n <= 64 and 0 <= truncation <= 2):
            raise gr.Error("seed 0..2^32-1, 1-64 images, truncation 0-2")

        def work(job: Job):
            from generators.gan.lifelong import check_task_name, generate, load_task_generator

            G, _ = load_task_generator(self.gan_store, check_task_name(str(name or "")), base=self.gan_base,
                                       device=self.device)
            return [(im, f"{name} seed {seed} #{i}") for i, im in enumerate(_to_pil(generate(G, n, seed, truncation)))]

        return self.run_sync("gan", f"sample GAN task {name}", request, work)

    def gan_grid(self, seed, n, truncation, include_base, request: gr.Request | None = None):
        """One row per task (and the base), the same latents in every column."""
        seed, n, truncation = int(seed), int(n), float(truncation)
        if not (0 <= seed < 2**32 and 1 <= n <= 16 and 0 <= truncation <= 2):
            raise gr.Error("seed 0..2^32-1, 1-16 columns, truncation 0-2")

        def work(job: Job):
            from generators.gan.lifelong import TaskStore, generate, load_task_generator
            from generators.gan.stylegan2 import load_generator

            st = TaskStore(self.gan_store)
            names = st.task_names() if st.exists() else []
            if not names:
                raise UserError("no GAN tasks yet: learn one first")
            rows = []
            if include_base:
                base_path, _ = st.base_path(self.gan_base)
                rows.append(("base", _to_pil(generate(load_generator(base_path, device=self.device), n, seed, truncation))))
            for k, task in enumerate(names, 1):
                G, _ = load_task_generator(self.gan_store, task, base=self.gan_base, device=self.device)
                rows.append((task, _to_pil(generate(G, n, seed, truncation))))
                job.progress(k, len(names))
            return _labelled_grid(rows)

        return self.run_sync("gan", "GAN grid across tasks", request, work)

    # --- synthetic data ---------------------------------------------------------------------
    def synth_dirs(self, set_name: str) -> tuple[Path, Path]:
        name = str(set_name or "").strip()
        if not NAME.match(name):
            raise UserError(f"data set name {name!r}: 1-48 lowercase letters, digits, '_' or '-'")
        root = self.home / "synthetic" / name
        return root / "data", root / "work"

    def _synth_reset(self, work: Path, keep_bank: bool) -> None:
        """Forget the fit (and the bank unless kept) when the data or the settings changed."""
        from generators.synthetic import extract as ex
        from generators.synthetic import fit as ft

        names = [ft.RESULT_FILE, ft.LORA_FILE, ft.CHECKPOINT_FILE, ft.CONFIG_FILE]
        if not keep_bank:
            names += [ex.BANK_FILE, ex.BANK_STAMP]
        for n in names:
            (work / n).unlink(missing_ok=True)

    def synth_classes_md(self, set_name) -> str:
        try:
            data, work = self.synth_dirs(set_name)
        except UserError as err:
            return str(err)
        if not data.is_dir() or not any(data.iterdir()):
            return "No classes yet: upload a zip of class folders, or add classes one by one."
        parts = []
        for d in sorted(p for p in data.iterdir() if p.is_dir()):
            n = sum(1 for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            parts.append(f"{html.escape(d.name)} ({n})")
        state = "fitted" if (work / "fit.json").is_file() else "attributes extracted" if (work / "bank.jsonl").is_file() else "new"
        return f"**{len(parts)} classes** ({state}): " + ", ".join(parts)

    def synth_upload(self, set_name, zip_file, class_name, class_files):
        """Add class folders from a zip and/or one class from uploaded images (+ .txt sidecars)."""
        from generators.synthetic import extract as ex

        try:
            data, work = self.synth_dirs(set_name)
            added = []
            if zip_file:
                check_uploads([zip_file], (".zip",), 1, "zip files")
                staging = data.parent / "unpack"
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir(parents=True)
                safe_extract_zip(Path(zip_file), staging, IMAGE_SUFFIXES + CAPTION_SUFFIXES)
                root = staging
                subdirs = [p for p in root.iterdir() if p.is_dir()]
                if len(subdirs) == 1 and not any(p.is_file() for p in root.iterdir()) and \
                        all(p.is_dir() for p in subdirs[0].iterdir()):
                    root = subdirs[0]  # the zip of one folder holding the class folders
                classes = [p for p in root.iterdir() if p.is_dir()]
                if not classes:
                    raise UserError("the zip holds no class folders (zip DIR with DIR/<class>/<image> inside)")
                for c in classes:
                    if not ex.CLASS_NAME.match(c.name):
                        raise UserError(f"class folder name {c.name!r}: letters, digits, space, '_', '-', '.', '+'")
                    data.mkdir(parents=True, exist_ok=True)
                    shutil.rmtree(data / c.name, ignore_errors=True)
                    shutil.move(str(c), str(data / c.name))
                    added.append(c.name)
                shutil.rmtree(staging, ignore_errors=True)
            if class_files:
                cname = str(class_name or "").strip()
                if not ex.CLASS_NAME.match(cname):
                    raise UserError("name the class (letters, digits, space, '_', '-', '.', '+'; at most 64 characters)")
                uploads = check_uploads(class_files, IMAGE_SUFFIXES + CAPTION_SUFFIXES, 200, "class files")
                target = data / cname
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir(parents=True)
                for src, safe in uploads:
                    shutil.copyfile(src, target / safe)
                added.append(cname)
            if not added:
                raise UserError("upload a zip of class folders, or name a class and upload its images")
            self._synth_reset(work, keep_bank=False)
        except Exception as err:  # noqa: BLE001
            raise _user_error(err) from None
        return self.synth_classes_md(set_name)

    def tokenizer(self):
        """The base's tokenizer for checking words (None for a hub base: nothing is downloaded for a check)."""
        if getattr(self, "_tokenizer", None) is None:
            from generators import diffusion

            folder = (diffusion.DEFAULT_BASE if self.base is None else Path(self.base)) / "tokenizer"
            self._tokenizer = False
            if folder.is_dir():
                try:
                    from transformers import CLIPTokenizer

                    self._tokenizer = CLIPTokenizer.from_pretrained(str(folder))
                except Exception:  # noqa: BLE001 - no check rather than no app
                    self._tokenizer = False
        return self._tokenizer or None

    def unknown_words(self, text: str) -> list[str]:
        """The words of `text` the base's tokenizer does not hold whole (it splits them into pieces)."""
        tok = self.tokenizer()
        if tok is None:
            return []
        vocab = tok.get_vocab()
        return [w for w in re.findall(r"[A-Za-z]+", str(text or "").lower()) if f"{w}</w>" not in vocab]

    def category_note(self, category) -> str:
        unknown = self.unknown_words(category)
        if not unknown:
            return ""
        pieces = " · ".join(t.replace("</w>", "") for t in self.tokenizer().tokenize(unknown[0]))
        return (f"⚠ The base does not know the word **{html.escape(unknown[0])}**: its tokenizer reads it as pieces "
                f"({html.escape(pieces)}), so prompts carry no meaning for it. Pick a word the base knows "
                f"(e.g. {DEFAULT_CATEGORY}) unless you train it on that word.")

    def _fit_config(self, category, steps=400, batch_size=8, class_words="plain", use_context=True):
        from generators.synthetic.fit import FitConfig, resolve_base

        category = str(category or "").strip()
        if not re.fullmatch(r"[A-Za-z][A-Za-z -]{0,31}", category):
            raise UserError("the category is a word or two (letters), e.g. bird")
        steps, batch_size = int(steps), int(batch_size)
        if not (1 <= steps <= 100_000 and 1 <= batch_size <= 64):
            raise UserError("steps must be 1-100000 and batch size 1-64")
        cfg = FitConfig(category=category, base=resolve_base(self.base), steps=steps, batch_size=batch_size,
                        class_words=class_words, use_context=bool(use_context),
                        checkpoint_every=max(1, min(50, steps // 4 or 1)))
        cfg.validate()  # e.g. an unknown class_words, as a one-line error
        return cfg

    def _synth_settle(self, work: Path, cfg, extract_only: bool = False):
        """The config to run with: a stopped fit resumes with its own; changed settings start the fit
        over. Extracting only keeps the fit (and its settings) whenever the bank's settings match."""
        from generators.synthetic import fit as ft

        saved = work / ft.CONFIG_FILE
        if not saved.is_file():
            return cfg
        old = ft.FitConfig.from_dict(json.loads(saved.read_text()))
        same_bank = (old.category, old.extractor, old.captioner, old.base) == (cfg.category, cfg.extractor, cfg.captioner, cfg.base)
        same_training = (old.batch_size, old.class_words, old.use_context) == (cfg.batch_size, cfg.class_words, cfg.use_context)
        if same_bank and (extract_only or ((work / ft.CHECKPOINT_FILE).is_file() and same_training)):
            return old
        if old.to_dict() != cfg.to_dict():
            self._synth_reset(work, keep_bank=same_bank)
        return cfg

    def bank_rows(self, work: Path) -> list[list]:
        from generators.synthetic import extract as ex

        if not (work / ex.BANK_FILE).is_file():
            return []
        return [[e.file, e.class_name, e.background, e.pose, e.source] for e in ex.load_bank(work / ex.BANK_FILE)]

    def synth_extract(self, set_name, category, request: gr.Request | None = None):
        """Extract (background, pose) per real image: the editable caption bank."""
        try:
            data, work = self.synth_dirs(set_name)
            if not data.is_dir():
                raise UserError("upload the class images first")
            cfg = self._fit_config(category)
        except Exception as err:  # noqa: BLE001
            raise _user_error(err) from None

        def run(job: Job):
            from generators.synthetic.fit import fit

            use = self._synth_settle(work, cfg, extract_only=True)
            result = fit(data, work, use, self.device, extract_only=True, log=job.log)
            job.log(f"{result.n_real} images in {len(result.classes)} classes; {len(result.rejected)} rejected")
            return self.bank_rows(work)

        rows = self.run_sync("synthetic", f"extract attributes of {set_name}", request, run)
        return rows, self.synth_classes_md(set_name)

    def synth_save_bank(self, set_name, rows):
        """Write the edited table back as bank.jsonl (an edited bank is what the fit uses)."""
        from generators.synthetic import extract as ex

        try:
            data, work = self.synth_dirs(set_name)
            path = work / ex.BANK_FILE
            if not path.is_file():
                raise UserError("extract the attributes first")
            old = {e.file: e for e in ex.load_bank(path)}
            if hasattr(rows, "values"):
                rows = rows.values.tolist()
            elif isinstance(rows, dict):
                rows = rows.get("data", [])
            entries = []
            for row in rows or []:
                file, cls, background, pose = (str(x) for x in list(row)[:4])
                if file not in old or old[file].class_name != cls:
                    raise UserError(f"row {file!r}: the file and class columns cannot be changed")
                if not background.strip() or not pose.strip():
                    raise UserError(f"row {file!r}: background and pose cannot be empty")
                changed = (background, pose) != (old[file].background, old[file].pose)
                entries.append(ex.BankEntry(file, cls, background, pose, "edited" if changed else old[file].source))
            if sorted(e.file for e in entries) != sorted(old):
                raise UserError("keep one row per real image")
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(ex.bank_text(entries))
            tmp.replace(path)
            ex.load_bank(path)  # validates (phrase cleaning, duplicates)
        except Exception as err:  # noqa: BLE001
            raise _user_error(err) from None
        n = sum(1 for e in entries if e.source == "edited")
        return f"saved the caption bank ({len(entries)} rows, {n} edited); the next fit uses it"

    def synth_fit(self, set_name, category, steps, batch_size, preview_every, class_words="plain", use_context=True,
                  job_id=None, request: gr.Request | None = None):
        """Fine-tune the one LoRA for all classes; streams (status, previews)."""
        job = self.board.claim(job_id, "synthetic", f"fit synthetic set {set_name}", _owner(request))
        job.panel = "synth_fit"
        try:
            data, work = self.synth_dirs(set_name)
            if not data.is_dir():
                raise UserError("upload the class images first")
            cfg = self._fit_config(category, steps, batch_size, class_words, use_context)
            preview_every = int(preview_every or 0)
            if preview_every < 0:
                raise UserError("preview every is at least 0")
        except Exception as err:  # noqa: BLE001
            self.board.fail(job, str(err))
            raise _user_error(err) from None

        def work_fn(job: Job):
            from generators import diffusion
            from generators.synthetic.fit import fit, prompt_for

            use = self._synth_settle(work, cfg)
            if self.unknown_words(use.category):
                job.log(f"warning: the base's tokenizer does not know {', '.join(self.unknown_words(use.category))!r}: "
                        "it enters the prompts as pieces without meaning")
            if use is not cfg:
                job.log(f"resuming the stopped fit ({use.steps} steps in all)")

            def preview(step, pipe, items):
                if preview_every and step % preview_every == 0 and step < use.steps:
                    classes = items
                    names = sorted({it.class_name for it in classes})[:4]
                    size = diffusion.base_resolution(pipe)
                    settings = [diffusion.GenerationSettings(prompt=prompt_for(use, c, None), seed=0, steps=20,
                                                             guidance=2.0, width=size, height=size) for c in names]
                    job.set_previews([(im, f"{c}, step {step}") for im, c in zip(diffusion.generate(pipe, settings), names)])

            result = fit(data, work, use, self.device, progress=job.progress, should_stop=job.should_stop, log=job.log,
                         preview=preview)
            if result.stopped:
                job.log(f"stopped at step {result.steps}/{use.steps}; the checkpoint is kept: press Fine-tune again to resume")
            else:
                job.log(f"fitted {len(result.classes)} classes on {result.n_real} images: {result.steps} steps, "
                        f"final loss {result.final_loss:.4f}" + (" (edited caption bank)" if result.bank_edited else ""))
            return result

        yield from self.run_job(job, work_fn, lambda j: (_status_md(j), list(j.previews)))

    def _synth_plan(self, set_name, per_class, seed, context, steps=25, guidance=2.0):
        from generators.synthetic.export import CONTEXTS, ExportConfig, plan_export

        data, work = self.synth_dirs(set_name)
        per_class, seed, steps, guidance = int(per_class), int(seed), int(steps), float(guidance)
        if context not in CONTEXTS:
            raise UserError(f"context is one of {', '.join(CONTEXTS)}")
        if not (1 <= per_class <= 1000 and 0 <= seed < 2**32 and 1 <= steps <= 200 and 0 <= guidance <= 30):
            raise UserError("1-1000 images per class, seed 0..2^32-1, steps 1-200, guidance 0-30")
        cfg = ExportConfig(per_class=per_class, seed=seed, context=context, steps=steps, guidance=guidance)
        return work, cfg, plan_export(work, cfg)

    def synth_preview(self, set_name, per_class, seed, context, steps, guidance, request: gr.Request | None = None):
        """A few images per class exactly as the export would draw them (same seeds, same prompts)."""
        try:
            work, cfg, plan = self._synth_plan(set_name, min(int(per_class), 8), seed, context, steps, guidance)
        except Exception as err:  # noqa: BLE001
            raise _user_error(err) from None

        def run(job: Job):
            from generators import diffusion
            from generators.synthetic.export import load_pipeline

            pipe = load_pipeline(plan, self.device)
            out = []
            for k, j in enumerate(plan.jobs):
                if job.should_stop():
                    break
                s = diffusion.GenerationSettings(prompt=j.prompt, negative_prompt=cfg.negative_prompt, seed=j.seed,
                                                 steps=cfg.steps, guidance=cfg.guidance, width=plan.width, height=plan.height)
                out.append((diffusion.generate(pipe, [s])[0], f"{j.class_name}: {j.background} / {j.pose}"))
                job.progress(k + 1, len(plan.jobs))
            return out

        return self.run_sync("synthetic", f"preview synthetic set {set_name}", request, run)

    def synth_export(self, set_name, per_class, seed, context, steps, guidance, job_id=None,
                     request: gr.Request | None = None):
        """Write the data set (class folders, metadata.jsonl, card) and zip it; streams (status, zip, card)."""
        job = self.board.claim(job_id, "synthetic", f"export synthetic set {set_name}", _owner(request))
        job.panel = "synth_export"
        try:
            work, cfg, plan = self._synth_plan(set_name, per_class, seed, context, steps, guidance)
        except Exception as err:  # noqa: BLE001
            self.board.fail(job, str(err))
            raise _user_error(err) from None

        def run(job: Job):
            from generators.synthetic.export import export

            import hashlib

            key = json.dumps([plan.fit_info["lora_sha256"], plan.bank_sha256, cfg.per_class, cfg.seed, cfg.context,
                              cfg.steps, cfg.guidance])  # the same settings continue (or reuse) the same export
            tag = hashlib.sha256(key.encode()).hexdigest()[:10]
            out = self.home / "exports" / f"synthetic-{set_name}-{cfg.per_class}x{len(plan.classes)}-seed{cfg.seed}-{tag}"
            result = export(work, out, cfg, self.device, progress=job.progress, should_stop=job.should_stop,
                            zip_archive=True, log=job.log)
            if result.stopped or not result.complete:
                job.log(f"stopped with {len(result.missing)} images to go; export again with the same settings to finish")
                return None
            job.log(f"wrote {result.written} images ({result.skipped} already there) and {result.zip_path.name}")
            return str(result.zip_path), (out / "README.md").read_text()

        yield from self.run_job(job, run, lambda j: self.render_panel("synth_export", j))

    # --- jobs -------------------------------------------------------------------------------
    def latest_job_id(self) -> int | None:
        rows = self.board.rows()
        return rows[0][0] if rows else None

    def jobs_view(self, job_id):
        rows = self.board.rows()
        if (job_id in (None, "", 0)) and rows:
            job_id = rows[0][0]
        return rows, self.board.log_text(job_id)


JOB_COLUMNS = ["id", "kind", "what", "status", "progress", "user", "queued", "took"]
# The panels a page follows (follow_page) and how many outputs each has.
PANELS = {"museum": 2, "generate": 4, "gan": 2, "synth_fit": 2, "synth_export": 3}


def create_app(museum_dir=None, base=None, studio_home=None, device: str = "cpu", gan_base=None) -> gr.Blocks:
    """The Studio web app (not launched: use `launch(demo, ...)`).

    museum_dir: the museum (default STUDIO_HOME/museum); base: the text-to-image base (default
    the embedded studio-mini); studio_home: where everything else goes (default $STUDIO_HOME,
    else ~/.studio); gan_base: the GAN base for a new task store (default assets/gan-mini)."""
    studio = Studio(museum_dir, base, studio_home, device, gan_base)
    # Gradio's upload and cache folder lives under STUDIO_HOME: nothing is written elsewhere.
    os.environ["GRADIO_TEMP_DIR"] = str(studio.home / "tmp")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    with gr.Blocks(title="Studio", analytics_enabled=False, delete_cache=(3600, 24 * 3600)) as demo:
        demo.studio = studio
        gr.Markdown("# Studio\nTeach a text-to-image model new styles one after another, adapt a GAN to new domains, "
                    "and turn a few photos per class into a synthetic data set. Heavy jobs run one at a time; "
                    "the **Jobs** tab shows the queue and every log.")
        panels: dict[str, list] = {}
        with gr.Tabs():
            with gr.Tab("Museum", id="museum"):
                museum_ui = _museum_tab(studio)
                panels["museum"] = [museum_ui["status"], museum_ui["previews"]]
            with gr.Tab("Generate", id="generate"):
                gen_ui = _generate_tab(studio)
                panels["generate"] = gen_ui["panel"]
            with gr.Tab("Lifelong GAN", id="gan"):
                gan_outputs = _gan_tab(studio, panels)
            with gr.Tab("Synthetic data", id="synthetic"):
                _synthetic_tab(studio, panels)
            with gr.Tab("Jobs", id="jobs"):
                _jobs_tab(studio)
        refresh_outputs = [museum_ui["styles"], museum_ui["heatmap"], museum_ui["export_name"], gen_ui["styles"]]
        demo.load(studio.museum_refresh, None, refresh_outputs, api_visibility="private", **LIGHT)
        demo.load(studio.gan_refresh, None, gan_outputs, api_visibility="private", **LIGHT)
        museum_ui["learn_event"].then(studio.museum_refresh, None, refresh_outputs, api_visibility="private", **LIGHT)
        museum_ui["ingest_event"].then(studio.museum_refresh, None, refresh_outputs, api_visibility="private", **LIGHT)
        # A (re)opened page follows this user's latest job of every panel: jobs outlive their tabs.
        followed = demo.load(studio.follow_page, None, [c for p in PANELS for c in panels[p]], api_visibility="private",
                             show_progress="hidden", **HEAVY)
        followed.then(studio.museum_refresh, None, refresh_outputs, api_visibility="private", **LIGHT)
        followed.then(studio.gan_refresh, None, gan_outputs, api_visibility="private", **LIGHT)
        followed.then(studio.estimate_md, museum_ui["estimate_inputs"], museum_ui["estimate"], api_visibility="private",
                      show_progress="hidden", **LIGHT)
        museum_ui["refresh"].click(studio.museum_refresh, None, refresh_outputs, api_name="museum_styles", **LIGHT)
    demo.queue(default_concurrency_limit=1)
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, auth: tuple[str, str] | None = None,
           **kwargs):
    """Launch with Studio's safe defaults: loopback, no share link, outputs/exports servable only."""
    studio: Studio = demo.studio
    return demo.launch(server_name=host, server_port=port, auth=auth, share=False, allowed_paths=studio.allowed_paths,
                       max_file_size=LAUNCH_MAX_FILE_SIZE, show_error=True, css=CSS, **kwargs)


# --- the tabs ---------------------------------------------------------------------------------


def _registrar(studio: Studio, kind: str, title: str):
    """A cheap private event that shows the job as queued before the heavy slot reaches it."""

    def register(label, request: gr.Request):
        return studio.register(kind, title.format(label), request)

    return register


def _bind_stop(studio: Studio, btn, kind: str, status, api_name: str):
    def stop(request: gr.Request):
        return studio.stop(kind, request)

    btn.click(stop, None, status, api_name=api_name, queue=False, **LIGHT)


def _museum_tab(studio: Studio) -> dict:
    from styles.folder import MAX_IMAGES

    ui = {}
    ui["styles"] = gr.HTML(studio.styles_html())
    ui["refresh"] = gr.Button("Refresh", size="sm")
    with gr.Accordion("Add a style", open=True):
        with gr.Row():
            with gr.Column(scale=2):
                files = gr.File(label=f"Style images (3-{MAX_IMAGES}; png, jpg, webp; optional .txt captions)",
                                file_count="multiple", file_types=list(IMAGE_SUFFIXES + CAPTION_SUFFIXES))
                with gr.Row():
                    name = gr.Textbox(label="Name", placeholder="lowercase letters, digits, _ or -", max_length=48)
                    token = gr.Textbox(label="Token (default <name>)", max_length=50)
                description = gr.Textbox(label="Description", max_length=500)
                with gr.Row():
                    steps = gr.Number(label="Steps", value=300, precision=0, minimum=1, maximum=100_000)
                    batch = gr.Number(label="Batch size", value=8, precision=0, minimum=1, maximum=64)
                    preview_every = gr.Number(label="Preview every (steps, 0 = never)", value=50, precision=0, minimum=0)
                with gr.Row():
                    estimate = gr.Markdown(lambda: studio.estimate_md(300, 8))
                    measure = gr.Button("Measure speed", size="sm", scale=0, min_width=140)
                with gr.Row():
                    learn = gr.Button("Learn style", variant="primary")
                    stop = gr.Button("Stop", variant="stop")
            with gr.Column(scale=1):
                status = gr.Markdown("")
                previews = gr.Gallery(label="Previews", columns=2, height=260)
    ui["status"], ui["previews"] = status, previews
    for box in (steps, batch):
        box.change(studio.estimate_md, [steps, batch], estimate, api_visibility="private", show_progress="hidden", **LIGHT)
    measure.click(studio.museum_measure, [steps, batch], estimate, api_name="museum_measure", **HEAVY)
    job_id = gr.State(None)
    reg = learn.click(_registrar(studio, "museum", "learn style {}"), name, job_id, api_visibility="private", queue=False)
    ui["learn_event"] = reg.then(studio.museum_learn, [files, name, token, description, steps, batch, preview_every, job_id],
                                 [status, previews], api_name="museum_learn", **HEAVY)
    _bind_stop(studio, stop, "museum", status, "museum_stop")
    with gr.Accordion("Learn a folder of style folders (on this machine)", open=False):
        gr.Markdown("The web app's `studio ingest DIR`: every sub-folder of images is one style (its name the folder's, "
                    "optional `style.toml` and `.txt` captions inside), learnt in sorted order or the order of "
                    "`DIR/order.txt`. A style already in the museum with the same images is skipped; the same name with "
                    "other images is refused unless *new version*. The folder is read on the server, never written.")
        with gr.Row():
            ifolder = gr.Textbox(label="Folder (full path on this machine)", placeholder="/data/styles", scale=3)
            isteps = gr.Number(label="Steps per style (0 = style.toml's, else 300)", value=0, precision=0, minimum=0)
            inew = gr.Checkbox(label="New version for a changed style (<name>-v2)", value=False)
        with gr.Row():
            iplan = gr.Button("Plan")
            ilearn = gr.Button("Learn all", variant="primary")
            istop = gr.Button("Stop", variant="stop")
        ireport = gr.Markdown("")
        iplan.click(studio.museum_plan, [ifolder, isteps, inew], ireport, api_name="museum_plan", **LIGHT)
        ijob = gr.State(None)
        ireg = ilearn.click(_registrar(studio, "museum", "ingest {}"), ifolder, ijob, api_visibility="private", queue=False)
        ui["ingest_event"] = ireg.then(studio.museum_ingest, [ifolder, isteps, inew, ijob], [status, previews, ireport],
                                       api_name="museum_ingest", **HEAVY)
        _bind_stop(studio, istop, "museum", status, "museum_ingest_stop")
    for event in (ui["learn_event"], ui["ingest_event"]):  # a finished job measured this machine: a new estimate
        event.then(studio.estimate_md, [steps, batch], estimate, api_visibility="private", show_progress="hidden", **LIGHT)
    ui["estimate"], ui["estimate_inputs"] = estimate, [steps, batch]
    with gr.Accordion("Forgetting", open=False):
        ui["heatmap"] = gr.HTML(studio.forgetting_html())
    with gr.Accordion("Export a style", open=False):
        with gr.Row():
            ui["export_name"] = gr.Dropdown(label="Style", choices=studio.style_names(), allow_custom_value=True)
            fmt = gr.Radio(["diffusers", "kohya"], value="diffusers", label="Format")
            export = gr.Button("Export (zip)")
        out = gr.File(label="Download", interactive=False, height=90)
        export.click(studio.museum_export, [ui["export_name"], fmt], out, api_name="museum_export")
    return ui


def _generate_tab(studio: Studio) -> dict:
    ui = {}
    with gr.Row():
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Prompt", lines=2, max_length=MAX_PROMPT,
                                value="a red fish on the sea background, large, facing left, in the center")
            negative = gr.Textbox(label="Negative prompt", max_length=MAX_PROMPT)
            ui["styles"] = gr.Dropdown(label="Styles (from the museum)", choices=studio.style_names(), multiselect=True,
                                         allow_custom_value=True)  # checked against the museum on the server
            with gr.Row():
                seed = gr.Number(label="Seed", value=0, precision=0, minimum=0)
                steps = gr.Slider(1, 200, value=25, step=1, label="Steps")
                guidance = gr.Slider(0, 30, value=5.0, step=0.5, label="Guidance")
                batch = gr.Slider(1, MAX_BATCH, value=4, step=1, label="Batch (image i uses seed + i)")
            with gr.Row():
                go = gr.Button("Generate", variant="primary")
                stop = gr.Button("Stop", variant="stop")
            status = gr.Markdown("")
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="Images (settings are embedded in every PNG)", columns=4, height=360,
                                 format="png", interactive=False)
            files = gr.File(label="Downloads", file_count="multiple", interactive=False)
            with gr.Row():
                reuse = gr.Button("Reuse settings of the picked image", size="sm", scale=0, min_width=260)
                reuse_file = gr.File(label="...or of a Studio PNG (drop it here)", file_types=[".png"], height=140)
    paths = gr.State([])
    picked = gr.State(None)
    job_id = gr.State(None)
    reg = go.click(_registrar(studio, "generate", "generate: {:.40}"), prompt, job_id, api_visibility="private", queue=False)
    reg.then(studio.generate, [prompt, negative, ui["styles"], seed, steps, guidance, batch, job_id],
             [gallery, files, status, paths], api_name="generate", **HEAVY)
    ui["panel"] = [gallery, files, status, paths]
    _bind_stop(studio, stop, "generate", status, "generate_stop")

    def pick(evt: gr.SelectData):
        return evt.index

    gallery.select(pick, None, picked, api_visibility="private", queue=False)
    form = [prompt, negative, ui["styles"], seed, steps, guidance]
    reuse.click(studio.reuse_selected, [paths, picked], form, api_visibility="private", **LIGHT)
    reuse_file.upload(studio.reuse_settings, reuse_file, form, api_name="reuse_settings", **LIGHT)
    return ui


def _jobs_tab(studio: Studio) -> None:
    gr.Markdown("Every heavy job, newest first. One runs at a time; the others wait their turn. A job keeps running "
                "when its page is closed: reopen the page to follow it. Pick a row to read its log (the box follows "
                "the latest job until you pick one); Stop ends that job (yours only) after its current step.")
    table = gr.Dataframe(headers=JOB_COLUMNS, value=studio.board.rows, interactive=False, wrap=True)
    with gr.Row():
        job = gr.Number(label="Job", precision=0, value=studio.latest_job_id)
        stop = gr.Button("Stop this job", variant="stop")
    stopped = gr.Markdown()
    log = gr.Textbox(label="Log", lines=14, max_lines=30, autoscroll=True)

    def stop_job(job_id, request: gr.Request):
        return studio.stop_job(job_id, request)

    stop.click(stop_job, job, stopped, api_name="job_stop", queue=False, **LIGHT)

    def pick(evt: gr.SelectData):
        rows = studio.board.rows()
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return rows[row][0] if 0 <= row < len(rows) else None

    picked = gr.State(False)  # the user chose a job: the box stops following the latest one
    table.select(pick, None, job, api_visibility="private", queue=False).then(
        lambda: True, None, picked, api_visibility="private", queue=False)
    job.input(lambda v: v not in (None, "", 0), job, picked, api_visibility="private", queue=False)
    timer = gr.Timer(2.0)
    timer.tick(studio.jobs_view, job, [table, log], api_name="jobs", show_progress="hidden", **LIGHT)

    def follow_latest(current, chosen):
        latest = studio.latest_job_id()
        return gr.skip() if chosen or latest is None or latest == current else latest

    timer.tick(follow_latest, [job, picked], job, api_visibility="private", show_progress="hidden", **LIGHT)
    job.change(studio.jobs_view, job, [table, log], api_visibility="private", show_progress="hidden", **LIGHT)




GAN_COLUMNS = ["task", "#", "images", "iterations", "rank", "% of G stored", "train s", "created"]
BANK_COLUMNS = ["file", "class", "background", "pose", "source"]


def _gan_tab(studio: Studio, panels: dict) -> list:
    gr.Markdown("A frozen GAN base learns one new domain per task from about 10 images (LeFT modulators, "
                "about 1 % of the generator each); earlier tasks never change.")
    tasks = gr.Dataframe(headers=GAN_COLUMNS, interactive=False, label="Tasks")
    note = gr.Markdown("")
    refresh = gr.Button("Refresh", size="sm")
    with gr.Accordion("Learn a task", open=True):
        with gr.Row():
            with gr.Column(scale=2):
                files = gr.File(label="Task images (2-50, about 10 is typical; png, jpg, webp)", file_count="multiple",
                                file_types=list(IMAGE_SUFFIXES))
                with gr.Row():
                    name = gr.Textbox(label="Task name", placeholder="lowercase letters, digits, _ or -", max_length=48)
                    iters = gr.Number(label="Iterations", value=400, precision=0, minimum=1, maximum=100_000)
                    mode = gr.Radio(["perceptual", "pixel", "off"], value="perceptual", label="Mode seeking")
                    preview_every = gr.Number(label="Preview every (iterations, 0 = never)", value=50, precision=0, minimum=0)
                with gr.Row():
                    learn = gr.Button("Learn task", variant="primary")
                    stop = gr.Button("Stop", variant="stop")
            with gr.Column(scale=1):
                status = gr.Markdown("")
                previews = gr.Gallery(label="Samples", columns=4, height=260)
    job_id = gr.State(None)
    reg = learn.click(_registrar(studio, "gan", "learn GAN task {}"), name, job_id, api_visibility="private", queue=False)
    learned = reg.then(studio.gan_learn, [files, name, iters, mode, preview_every, job_id], [status, previews],
                       api_name="gan_learn", **HEAVY)
    panels["gan"] = [status, previews]
    _bind_stop(studio, stop, "gan", status, "gan_stop")
    with gr.Accordion("Sample", open=True):
        with gr.Row():
            task = gr.Dropdown(label="Task", choices=[], allow_custom_value=True)
            seed = gr.Number(label="Seed", value=0, precision=0, minimum=0)
            n = gr.Slider(1, 64, value=8, step=1, label="Images")
            psi = gr.Slider(0, 1.5, value=1.0, step=0.05, label="Truncation ψ")
            sample = gr.Button("Sample")
        samples = gr.Gallery(label="Samples", columns=8, height=200)
        sample.click(studio.gan_sample, [task, seed, n, psi], samples, api_name="gan_sample", **HEAVY)
    with gr.Accordion("Every task side by side (the same seeds)", open=False):
        with gr.Row():
            gseed = gr.Number(label="Seed", value=0, precision=0, minimum=0)
            gn = gr.Slider(1, 16, value=8, step=1, label="Columns")
            gpsi = gr.Slider(0, 1.5, value=1.0, step=0.05, label="Truncation ψ")
            with_base = gr.Checkbox(value=True, label="Base as the first row")
            grid_btn = gr.Button("Draw the grid")
        grid = gr.Image(label="Rows: tasks; columns: the same latents", type="pil", format="png", interactive=False)
        grid_btn.click(studio.gan_grid, [gseed, gn, gpsi, with_base], grid, api_name="gan_grid", **HEAVY)
    outs = [tasks, note, task]
    refresh.click(studio.gan_refresh, None, outs, api_name="gan_tasks", **LIGHT)
    learned.then(studio.gan_refresh, None, outs, api_visibility="private", **LIGHT)
    return outs


def _synthetic_tab(studio: Studio, panels: dict) -> None:
    gr.Markdown("Turn a few real photos per class into a large synthetic training set: extract each image's background "
                "and pose (edit them if you like), fine-tune one LoRA for all classes, then export images that draw "
                "their context from every class's photos.")
    with gr.Row():
        set_name = gr.Textbox(label="Data set name", value="my-set", max_length=48)
        category = gr.Textbox(label="Category (what every class is, e.g. bird)", value=DEFAULT_CATEGORY, max_length=32)
    category_note = gr.Markdown(lambda: studio.category_note(DEFAULT_CATEGORY))
    category.change(studio.category_note, category, category_note, api_visibility="private", show_progress="hidden",
                    **LIGHT)
    classes = gr.Markdown(studio.synth_classes_md("my-set"))
    with gr.Accordion("1. Upload", open=True):
        with gr.Row():
            zip_file = gr.File(label="A zip of class folders (DIR/<class>/<image>)", file_types=[".zip"])
            with gr.Column():
                class_name = gr.Textbox(label="...or one class at a time: class name", max_length=64)
                class_files = gr.File(label="its images (+ optional .txt sidecars)", file_count="multiple",
                                      file_types=list(IMAGE_SUFFIXES + CAPTION_SUFFIXES))
        upload = gr.Button("Add to the data set")
        upload.click(studio.synth_upload, [set_name, zip_file, class_name, class_files], classes,
                     api_name="synth_upload", **LIGHT)
    with gr.Accordion("2. Attributes (editable)", open=True):
        extract = gr.Button("Extract attributes")
        bank = gr.Dataframe(headers=BANK_COLUMNS, interactive=True, label="Caption bank: edit background and pose",
                            wrap=True)
        save = gr.Button("Save edits", size="sm")
        saved = gr.Markdown("")
        extract.click(studio.synth_extract, [set_name, category], [bank, classes], api_name="synth_extract", **HEAVY)
        save.click(studio.synth_save_bank, [set_name, bank], saved, api_name="synth_save_bank", **LIGHT)
    with gr.Accordion("3. Fine-tune", open=True):
        with gr.Row():
            with gr.Column(scale=2):
                with gr.Row():
                    steps = gr.Number(label="Steps", value=400, precision=0, minimum=1, maximum=100_000)
                    batch = gr.Number(label="Batch size", value=8, precision=0, minimum=1, maximum=64)
                    preview_every = gr.Number(label="Preview every (steps, 0 = never)", value=100, precision=0, minimum=0)
                with gr.Row():
                    class_words = gr.Radio([("plain words", "plain"), ("a learnt token per class", "learnt")],
                                           value="plain", label="Class names enter the prompt as")
                    use_context = gr.Checkbox(value=True, label="Condition on background and pose (off: DataDream)")
                with gr.Row():
                    fit = gr.Button("Fine-tune", variant="primary")
                    stop = gr.Button("Stop", variant="stop")
            with gr.Column(scale=1):
                status = gr.Markdown("")
                previews = gr.Gallery(label="Previews", columns=4, height=200)
        job_id = gr.State(None)
        reg = fit.click(_registrar(studio, "synthetic", "fit synthetic set {}"), set_name, job_id,
                        api_visibility="private", queue=False)
        fitted = reg.then(studio.synth_fit, [set_name, category, steps, batch, preview_every, class_words,
                                                 use_context, job_id], [status, previews],
                          api_name="synth_fit", **HEAVY)
        fitted.then(studio.synth_classes_md, set_name, classes, api_visibility="private", **LIGHT)
        panels["synth_fit"] = [status, previews]
        _bind_stop(studio, stop, "synthetic", status, "synth_stop")
    with gr.Accordion("4. Preview and export", open=True):
        with gr.Row():
            per_class = gr.Number(label="Images per class", value=100, precision=0, minimum=1, maximum=1000)
            seed = gr.Number(label="Seed", value=0, precision=0, minimum=0)
            context = gr.Radio(["bank", "same-class", "none"], value="bank", label="Context")
            esteps = gr.Slider(1, 200, value=25, step=1, label="Sampling steps")
            guidance = gr.Slider(0, 30, value=2.0, step=0.5, label="Guidance")
        with gr.Row():
            preview = gr.Button("Preview (up to 8 per class)")
            export = gr.Button("Export (zip)", variant="primary")
        gallery = gr.Gallery(label="Preview", columns=8, height=220)
        estatus = gr.Markdown("")
        download = gr.File(label="Download", interactive=False, height=90)
        with gr.Accordion("Dataset card", open=False):
            card = gr.Markdown("")
        inputs = [set_name, per_class, seed, context, esteps, guidance]
        preview.click(studio.synth_preview, inputs, gallery, api_name="synth_preview", **HEAVY)
        ejob = gr.State(None)
        ereg = export.click(_registrar(studio, "synthetic", "export synthetic set {}"), set_name, ejob,
                            api_visibility="private", queue=False)
        ereg.then(studio.synth_export, inputs + [ejob], [estatus, download, card], api_name="synth_export", **HEAVY)
        panels["synth_export"] = [estatus, download, card]
    set_name.change(studio.synth_classes_md, set_name, classes, api_visibility="private", **LIGHT)
