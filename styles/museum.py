"""The museum folder: a style library built on one base, safe against kills at any moment.

Layout::

    museum.json                       the index (written atomically: the commit point)
    lora/task-<N>.safetensors         the shared LoRA after the latest task N (diffusers keys); the
                                      only LoRA a museum keeps, whatever the number of styles
    styles/<name>/embedding.safetensors   {token: vector}, loadable by load_textual_inversion
    styles/<name>/manifest.json       name, token, image hashes, captions, config, timings, metrics
    styles/<name>/thumb.png           one sample
    work/<name>/                      an interrupted task's checkpoint (resumable)

A task's files are written first, then museum.json is replaced in one rename (generators/files.py); files
that no index entry names (left by a kill) are ignored and swept on the next write. A new
museum's first museum.json is written when its first task starts, so that a run that learns
nothing writes nothing.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from generators.errors import UserError
from generators.files import CHECKPOINT_FILE, atomic_save_tensors, atomic_write_json, save_tensors

INDEX = "museum.json"
THUMB = "thumb.png"  # one sample of a style, beside its manifest
FORMAT_VERSION = 1


def write_json_atomic(path: Path, data) -> None:
    """museum.json's layout (sorted keys, no final newline), written atomically."""
    atomic_write_json(path, data, sort_keys=True, newline=False)


@dataclass
class StyleEntry:
    name: str
    token: str
    task: int  # 1-based: the task that learnt it
    images: int
    created: str
    score: float | None = None


def read_index(path: Path) -> dict:
    """museum.json, checked to be an index; any damage is one UserError naming the file."""
    fix = "restore it from a backup, or move it away to start a new museum in that folder"
    try:
        index = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not valid JSON ({err}); {fix}") from None
    keys = {"name", "token", "task", "images", "created"}
    if (not isinstance(index, dict) or not isinstance(index.get("base"), str) or not isinstance(index.get("styles"), list)
            or not all(isinstance(s, dict) and keys <= set(s) for s in index["styles"])):
        raise UserError(f"{path} is not a museum index (an object with \"base\" and a \"styles\" list); {fix}")
    return index


def _family(base: str) -> str | None:
    """The family of a base name, None where it cannot be told from the file system (a hub id)."""
    from generators.bases import family_of

    try:
        return family_of(base)
    except (OSError, ValueError):
        return None


def _other_base_message(root: Path, index: dict, base: str) -> str:
    from generators.bases import ADAPTERS

    built, asked = index.get("family") or _family(index["base"]), _family(base)
    if built and asked and built != asked:
        return (f"museum {root} was built on an {ADAPTERS[built].label} base ({index['base']!r}) and {base!r} is an "
                f"{ADAPTERS[asked].label} base; a museum keeps one base: use another --museum for {ADAPTERS[asked].label}")
    return f"museum {root} was built on base {index['base']!r}, not {base!r}; pass --base {index['base']} or use another --museum"


class Museum:
    def __init__(self, root: Path, index: dict):
        self.root = Path(root)
        self.index = index
        self.new = False  # True until a new museum's first museum.json is written

    # --- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, root: Path, base: str | None = None, create: bool = False) -> "Museum":
        """Open (or with create=True, start) the museum at `root`, checking it was built on `base`.

        A new museum is written to disk only when its first task starts (`write_new`): a run that
        learns nothing leaves no trace. Opening removes the work folders of styles already
        committed (left by a kill between a commit and its clean-up)."""
        root = Path(root)
        path = root / INDEX
        if path.exists():
            index = read_index(path)
            if base is not None and index["base"] != base:
                raise UserError(_other_base_message(root, index, base))
            museum = cls(root, index)
            museum.remove_stale_work()
            return museum
        if not create:
            raise FileNotFoundError(f"no museum at {root} (no {INDEX}); learn a style first with `studio ingest`")
        if root.exists() and not root.is_dir():
            raise FileExistsError(f"{root} is a file, not a museum folder; choose an empty or new --museum folder")
        # work/ (a first task's checkpoint) and museum.json.tmp (a kill during the first index write)
        # are what a museum holds before its first museum.json: such a folder is still a new museum.
        if root.exists() and any(p.name not in ("work", INDEX + ".tmp") for p in root.iterdir()):
            raise FileExistsError(f"{root} exists and is not a museum; choose an empty or new --museum folder")
        if base is None:
            raise UserError("a new museum needs the base it is built on")
        museum = cls(root, {"format": FORMAT_VERSION, "base": base, "styles": [], "created": time.strftime("%Y-%m-%d %H:%M:%S")})
        family = _family(base)
        if family is not None:  # a hub id's family is known once it is loaded (engine.learn sets it)
            museum.index["family"] = family
        museum.new = True
        return museum

    def write_new(self) -> None:
        """Write a new museum's first museum.json (replacing a stale museum.json.tmp); a no-op once written."""
        if self.new:
            self.root.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.root / INDEX, self.index)
            self.new = False

    def remove_stale_work(self) -> None:
        """Remove work/<name> of every committed style: a kill after the commit left it behind."""
        work = self.root / "work"
        if work.is_dir():
            for d in work.iterdir():
                if self.has(d.name):
                    shutil.rmtree(d, ignore_errors=True)

    # --- reading -------------------------------------------------------------------------

    @property
    def base(self) -> str:
        return self.index["base"]

    @property
    def family(self) -> str | None:
        """The base family ('sd': SD 1.x/2.x, 'sdxl'; generators/bases.py); None if not yet known."""
        return self.index.get("family") or _family(self.base)

    @property
    def styles(self) -> list[StyleEntry]:
        return [StyleEntry(**s) for s in self.index["styles"]]

    @property
    def n_tasks(self) -> int:
        return len(self.index["styles"])

    def style(self, name: str) -> StyleEntry:
        for s in self.styles:
            if s.name == name:
                return s
        known = ", ".join(s.name for s in self.styles) or "none yet"
        raise UserError(f"no style {name!r} in museum {self.root} (styles: {known})")

    def has(self, name: str) -> bool:
        return any(s["name"] == name for s in self.index["styles"])

    def lora_path(self, task: int) -> Path:
        return self.root / "lora" / f"task-{task:03d}.safetensors"

    def lora_state(self) -> dict[str, torch.Tensor] | None:
        """The shared LoRA after the latest task; None before the first task."""
        return load_file(self.lora_path(self.n_tasks)) if self.n_tasks else None

    def style_dir(self, name: str) -> Path:
        return self.root / "styles" / name

    def thumb_path(self, name: str) -> Path:
        """The style's thumbnail (one sample); a style learnt without one has none."""
        return self.style_dir(name) / THUMB

    def embedding(self, name: str) -> dict[str, torch.Tensor]:
        return load_file(self.style_dir(name) / "embedding.safetensors")

    def manifest(self, name: str) -> dict:
        return json.loads((self.style_dir(name) / "manifest.json").read_text())

    def work_dir(self, name: str) -> Path:
        return self.root / "work" / name

    @staticmethod
    def index_path(root: Path) -> Path:
        """The museum's index file: it exists once the museum's first task has started."""
        return Path(root) / INDEX

    def checkpoint_metadata(self, name: str) -> dict | None:
        """The metadata of style `name`'s interrupted task (step, config JSON, after_tasks), or None."""
        from safetensors import safe_open

        ckpt = self.work_dir(name) / CHECKPOINT_FILE
        if not ckpt.is_file():
            return None
        with safe_open(str(ckpt), "pt") as fh:
            return fh.metadata() or {}

    def interrupted(self) -> list[dict]:
        """[{name, step, steps}] of the tasks stopped mid-way whose checkpoint is still here (not a
        style already held: a kill between its commit and the clean-up leaves its work folder)."""
        work, held, out = self.root / "work", {s.name for s in self.styles}, []
        for d in sorted(work.iterdir()) if work.is_dir() else []:
            if d.name in held:
                continue
            try:
                meta = self.checkpoint_metadata(d.name)
                if meta is not None:
                    out.append({"name": d.name, "step": int(meta.get("step", 0)),
                                "steps": json.loads(meta.get("config", "{}")).get("steps")})
            except Exception:  # noqa: BLE001 - a half-written checkpoint is simply not offered
                continue
        return out

    # --- writing -------------------------------------------------------------------------

    def commit_task(self, name: str, token: str, lora: dict[str, torch.Tensor], lora_metadata: dict,
                    embedding: dict[str, torch.Tensor], manifest: dict, thumbnail=None) -> StyleEntry:
        """Store a finished task. Everything is written before museum.json, which names it."""
        if self.has(name):
            raise FileExistsError(f"style {name!r} is already in museum {self.root}")
        self.write_new()
        task = self.n_tasks + 1
        (self.root / "lora").mkdir(exist_ok=True)
        atomic_save_tensors(lora, self.lora_path(task), metadata={k: str(v) for k, v in lora_metadata.items()})
        final = self.style_dir(name)
        staging = final.with_name(name + ".staging")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        save_tensors({k: v.detach().contiguous().cpu() for k, v in embedding.items()}, staging / "embedding.safetensors")
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        if thumbnail is not None:
            thumbnail.save(staging / THUMB)
        shutil.rmtree(final, ignore_errors=True)  # an orphan of an earlier kill, never an indexed style
        staging.rename(final)
        entry = StyleEntry(name=name, token=token, task=task, images=len(manifest.get("images", [])),
                           created=time.strftime("%Y-%m-%d %H:%M:%S"), score=manifest.get("metrics", {}).get("style_score"))
        self.index["styles"].append(entry.__dict__)
        write_json_atomic(self.root / INDEX, self.index)
        shutil.rmtree(self.work_dir(name), ignore_errors=True)
        self.sweep()
        return entry

    def sweep(self) -> None:
        """Remove files no index entry names: left by a kill between writes, and the shared LoRA's
        earlier states (museums written before it kept only the latest had one per task)."""
        names = {s["name"] for s in self.index["styles"]}
        styles_root = self.root / "styles"
        if styles_root.exists():
            for d in styles_root.iterdir():
                if d.name not in names:
                    shutil.rmtree(d, ignore_errors=True)
        lora_root = self.root / "lora"
        if lora_root.exists():
            for f in lora_root.iterdir():
                if f.name.endswith(".tmp") or (f.name.startswith("task-") and f.name != self.lora_path(self.n_tasks).name):
                    f.unlink()
