"""The museum's front door: plan a folder of style folders, then learn the plan. `studio ingest`,
the web app's folder panel and its single-style upload all go through `plan`/`plan_style` and
`ingest`, so they share one policy for configs, resume and refusals.

Semantics that protect the user's work:
- a style whose name is in the museum with the same image hashes is skipped (already learnt);
- the same name with different images is refused, unless `new_version=True`, which learns it
  as `<name>-v2` (then -v3, ...) beside the original: nothing learnt is ever replaced;
- an interrupted style (its checkpoint under museum/work/<name>) resumes where it stopped,
  if its images are unchanged; otherwise its stale checkpoint is discarded when the task starts
  (planning reads, it never deletes);
- a task's config is `task_config`'s: defaults, then the museum's shared LoRA shape, then the
  style.toml's steps, then the caller's overrides. An interrupted task resumes with the config it
  started with; an override of a training field that differs from it is refused, naming the field
  (the run fields in `MuseumConfig.RUN_FIELDS`, such as precision, may change on resume);
- hidden folders (and, with order.txt, the folders it does not name) are skipped, each with why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from generators.errors import UserError
from generators.files import CHECKPOINT_FILE
from generators.museum.config import MuseumConfig, check_shared_lora
from generators.run import Run, as_run
from styles.folder import IMAGE_SUFFIXES, StyleFolder, UnusableStyle, check_style_name, read_style_folder
from styles.museum import Museum


@dataclass
class PlanItem:
    folder: Path
    name: str
    action: str  # learn | resume | skip | refuse | invalid
    reason: str = ""
    style: StyleFolder | None = None
    rejected: list = field(default_factory=list)
    images: int | None = None  # usable images (None: not counted, the folder failed before)
    config: MuseumConfig | None = None  # the task's config (learn and resume items)


def style_order(root: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(style folders, skipped folders with why): sub-folders in sorted order, or in the order of
    root/order.txt (one name per line, inside root); hidden folders and, with order.txt, the
    folders it does not name are skipped."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist; give the folder that holds one sub-folder of images per style")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is a file, not a folder of style folders (one sub-folder of images per style)")
    subs = sorted(p for p in root.iterdir() if p.is_dir())
    folders = [p for p in subs if not p.name.startswith(".")]
    order_file = root / "order.txt"
    if order_file.exists():
        try:
            lines = order_file.read_text().splitlines()
        except (UnicodeDecodeError, OSError) as err:
            raise UserError(f"{order_file} is not a readable text file ({err}); write one sub-folder name per line") from None
        names = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        inside = root.resolve()
        for n in names:
            target = (root / n).resolve()
            if Path(n).is_absolute() or ".." in Path(n).parts or target == inside or not target.is_relative_to(inside):
                raise UserError(f"{order_file} names {n!r}, which is not inside {root}; "
                                "list only the names of its sub-folders, one per line")
        missing = [n for n in names if not (root / n).is_dir()]
        if missing:
            raise UserError(f"{order_file} names folders that do not exist: {', '.join(missing)}")
        folders = [root / n for n in names]
    named = {p.resolve() for p in folders}
    skipped = [(p, "hidden folder" if p.name.startswith(".") else f"not named in {order_file.name}")
               for p in subs if p.resolve() not in named]
    if not folders:
        hint = "; its images belong in a sub-folder named after the style" if any(
            p.suffix.lower() in IMAGE_SUFFIXES for p in root.iterdir()) else ""
        raise UserError(f"{root} holds no style folders (one sub-folder of images per style){hint}")
    return folders, skipped


def _next_version(museum: Museum, name: str) -> str:
    k = 2
    while museum.has(f"{name}-v{k}"):
        k += 1
    return f"{name}-v{k}"


def _checkpoint_config(museum: Museum, name: str) -> tuple[MuseumConfig, int] | None:
    """(config, step) of a style's interrupted task, if its checkpoint continues the museum's
    latest task (a checkpoint from before other styles were learnt cannot resume)."""
    meta = museum.checkpoint_metadata(name)
    if meta is None or meta.get("after_tasks") != str(museum.n_tasks):
        return None
    return MuseumConfig.from_dict(json.loads(meta["config"])), int(meta["step"])


def task_config(museum: Museum, name: str, toml_steps: int | None, overrides: dict | None = None,
                resume: bool = False) -> MuseumConfig:
    """The config a style's task runs with, one policy for every front (see the module docstring).
    A rank override without alpha sets alpha = rank (scale 1)."""
    overrides = dict(overrides or {})
    if "rank" in overrides and "alpha" not in overrides:
        overrides["alpha"] = float(overrides["rank"])
    cfg = MuseumConfig()
    if museum.n_tasks:  # the shared LoRA's shape and scale are fixed by the first task
        first = MuseumConfig.from_dict(museum.manifest(museum.styles[0].name)["config"])
        check_shared_lora(first, overrides, museum.root)
        cfg = replace(cfg, **{key: getattr(first, key) for key in MuseumConfig.SHARED_FIELDS})
    if toml_steps:
        cfg = replace(cfg, steps=toml_steps)
    cfg = replace(cfg, **overrides)
    interrupted = _checkpoint_config(museum, name) if resume else None
    if interrupted is None:
        return cfg
    started, step = interrupted
    for key, value in overrides.items():
        if key not in MuseumConfig.RUN_FIELDS and getattr(started, key) != value:
            raise UserError(f"{name} was interrupted at step {step} of a task started with {key}={getattr(started, key)!r}; "
                            f"it resumes with that config, so {key}={value!r} is refused: leave it out to resume, "
                            f"or delete {museum.work_dir(name)} to start the style over")
    return replace(started, **{k: v for k, v in overrides.items() if k in MuseumConfig.RUN_FIELDS})


def _plan_folder(folder: Path, museum: Museum, resolution: int, new_version: bool, overrides: dict | None,
                 names: set, name: str | None = None, where: str = "") -> PlanItem:
    try:
        style = read_style_folder(folder, resolution, name=name)
    except UnusableStyle as err:
        return PlanItem(folder, name or folder.name, "invalid", err.reason, rejected=err.rejected, images=err.usable)
    except (ValueError, NotADirectoryError) as err:
        return PlanItem(folder, name or folder.name, "invalid", str(err))
    if style.name in names:
        return PlanItem(folder, style.name, "invalid", f"another folder in {where} is also named {style.name!r}")
    names.add(style.name)
    item = PlanItem(folder, style.name, "learn", style=style, rejected=style.rejected, images=len(style.images))
    if museum.has(style.name):
        stored = sorted(i["sha256"] for i in museum.manifest(style.name)["images"])
        if stored == style.hashes:
            item.action, item.reason = "skip", "already in the museum with the same images"
        elif new_version:
            style.name = _next_version(museum, style.name)
            style.token = f"<{style.name}>"
            check_style_name(style.name)
            item.name, item.reason = style.name, f"new version of {folder.name} (different images)"
        else:
            item.action = "refuse"
            item.reason = (f"the museum already has {style.name!r} with different images; "
                           "pass --new-version to learn it as a new version beside the original")
    work = museum.work_dir(item.name)
    if item.action == "learn" and (work / CHECKPOINT_FILE).exists():
        hashes = (work / "hashes.txt").read_text().split() if (work / "hashes.txt").exists() else []
        if hashes != style.hashes:  # planning deletes nothing: engine.learn discards the checkpoint when it starts
            item.reason = "starts over: its interrupted training used other images"
        elif _checkpoint_config(museum, item.name) is None:
            item.reason = "starts over: the museum learnt other styles since it was interrupted"
        else:
            item.action, item.reason = "resume", "continues its interrupted training"
    if item.action in ("learn", "resume"):
        try:
            item.config = task_config(museum, item.name, style.steps, overrides, resume=item.action == "resume")
        except UserError as err:
            item.action, item.reason = "refuse", str(err)
    return item


def plan(root: Path, museum: Museum, resolution: int, new_version: bool = False,
         overrides: dict | None = None) -> list[PlanItem]:
    """What `ingest` will do with each style folder under root, with each task's config. Reads only."""
    folders, skipped = style_order(root)
    names: set = set()
    items = [_plan_folder(folder, museum, resolution, new_version, overrides, names, where=str(root)) for folder in folders]
    return items + [PlanItem(folder, folder.name, "skip", why) for folder, why in skipped]


def plan_style(folder: Path, museum: Museum, resolution: int, name: str, overrides: dict | None = None) -> PlanItem:
    """The plan for one style folder learnt under `name` (the web app's upload)."""
    return _plan_folder(Path(folder), museum, resolution, False, overrides, set(), name=name)


def plan_lines(items) -> list[str]:
    """The plan as `studio ingest` prints it (the web app's folder panel shows the same lines)."""
    lines = []
    for it in items:
        what = f"{it.action:7s} {it.name:24s}"
        if it.images is not None:
            what += f" {it.images:3d} images"
        if it.config is not None:
            what += f", {it.config.steps} steps"
        if it.rejected:
            what += f", {len(it.rejected)} files rejected"
        lines.append("  " + what + (f"  ({it.reason})" if it.reason else ""))
        if it.action == "invalid":  # a learnt style lists its rejected files in the report instead
            lines += [f"      rejected {f}: {why}" for f, why in it.rejected]
    return lines


def todo(items: list[PlanItem]) -> list[PlanItem]:
    return [it for it in items if it.action in ("learn", "resume")]


def ingest(museum: Museum, items: list[PlanItem], base=None, device: str = "auto", run: Run | None = None,
           evaluator=None) -> list[dict]:
    """Learn the plan's learn/resume items in order, each committed to the museum when it ends.

    run.progress counts training steps over the whole plan (info: style, task "k/n"); a stop ends
    the current task at its checkpoint and returns, its manifest marked 'stopped' (run the same
    plan again to resume). After each task, run.log gets its report lines and run.preview its
    thumbnail (the first score sample). Returns the manifests of the tasks run."""
    from generators.museum import engine

    run = as_run(run)
    tasks = todo(items)
    total = max(1, sum(it.config.steps for it in tasks))
    manifests, done = [], 0
    for k, it in enumerate(tasks, 1):
        def progress(step, _steps, _done=done, _name=it.name, _k=k, **info):
            run.progress(_done + step, total, style=_name, task=f"{_k}/{len(tasks)}", **info)

        task_run = Run(progress=progress, should_stop=run.should_stop, preview=run.preview,
                       preview_every=run.preview_every, log=run.log)
        manifest = engine.learn(museum, it.style, it.config, base, device, run=task_run, evaluator=evaluator)
        manifests.append(manifest)
        if manifest.get("stopped"):
            break
        done += it.config.steps
        run.log("\n".join(task_report(manifest)))
        thumb = museum.thumb_path(it.name)
        if thumb.is_file():
            from PIL import Image

            with Image.open(thumb) as im:
                run.preview(done, [im.convert("RGB")], [f"{it.name}: learnt"])
    return manifests


def write_captions(root: Path, captioner: str, base=None, device: str = "cpu", resolution: int = 64) -> list[tuple]:
    """`studio caption`: write the captions a task would make (captioning.fill_captions) as `.txt`
    sidecars beside every image of the style folders under `root` (or of `root` itself, if it
    holds images) that has none, so that a user can read and edit them before ingesting; an
    existing caption file is never touched. Returns [(image path, caption written or None, why not)]."""
    from generators import captioning

    root = Path(root)
    holds_images = root.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.iterdir())
    folders = [root] if holds_images else style_order(root)[0]
    caption = captioning.load_captioner(captioner, base, device)  # once, for every folder
    if caption is None:
        raise UserError(f"captioner {captioner!r} on base {base or 'studio-mini-2'} makes no captions; "
                        "give --captioner mini-world or a BLIP/GIT folder or hub id")
    out = []
    for folder in folders:
        try:
            style = read_style_folder(folder, resolution)
        except (UnusableStyle, ValueError, NotADirectoryError) as err:
            out.append((folder, None, getattr(err, "reason", str(err))))
            continue
        todo = [im for im in style.images if im.caption is None]
        for im, text in zip(todo, caption([im.image for im in todo]) if todo else []):
            if text:
                im.path.with_suffix(".txt").write_text(text + "\n")
            out.append((im.path, text or None, None if text else "the captioner returned nothing"))
    return out


def made_captions_line(manifest: dict) -> str | None:
    """How many images the task captioned itself, by whom, with an example (None: it made none)."""
    made = [im for im in manifest["images"] if im.get("made_caption")]
    if not made:
        return None
    return (f"{len(made)} images without a caption file, captioned by {manifest['captioner']}, "
            f"e.g. {made[0]['file']}: \"{made[0]['made_caption']}\"")


def task_report(manifest: dict) -> list[str]:
    """A learnt task's lines in the ingest report (the CLI prints them, the web app shows them)."""
    from generators.museum.scores import score_text

    r = manifest["result"]
    lines = [f"  {manifest['name']}: learnt as {manifest['token']}; {len(manifest['images'])} images used, "
             f"{len(manifest['rejected'])} rejected, {r['steps']} steps"
             + (f" (resumed at {r['resumed_from']})" if r.get("resumed_from") else "")
             + f", {manifest['timings']['total_seconds']:.0f} s, final loss {r['final_loss']:.4f}, "
             + score_text(manifest.get("metrics"))]
    made = made_captions_line(manifest)
    if made:
        lines.append(f"    {made}")
    return lines + [f"    rejected {f['file']}: {f['reason']}" for f in manifest["rejected"]]
