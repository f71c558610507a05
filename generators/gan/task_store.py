"""The lifelong GAN's task store (LFS-GAN, docs/methods.md §2): a folder of tasks learnt on one frozen base.

    store.json                          base reference: path, sha256 of generator.safetensors,
                                        its GANConfig and parameter count
    tasks/<name>/modulators.safetensors the task's LeFT factors (+ its truncation centre w_avg)
    tasks/<name>/task.json              configs (LeFTConfig, ModeSeekingConfig, TrainConfig,
                                        GANConfig), images used / rejected, storage (count and % of
                                        G), timings, losses
    work/<name>/checkpoint.*            an unfinished task (its modulators, its discriminator, both
                                        Adam states, RNG states); removed when the task is done

A task folder appears complete or not at all (written as a temporary folder, then renamed,
`TaskStore.write_task`); every JSON / tensor file is written to a temporary name and renamed.
Writing a task never touches the base or another task, so earlier tasks' samples stay bitwise
identical (zero forgetting by construction, tested). No torch import here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from generators.errors import UserError
from generators.files import CHECKPOINT_FILE, CHECKPOINT_JSON, atomic_save_tensors, atomic_write_json, sha256_file
from generators.gan.folder import GENERATOR_FILE

STORE_FORMAT = "studio-lifelong-gan"
STORE_VERSION = 1
STORE_FILE = "store.json"
TASKS_DIR = "tasks"
WORK_DIR = "work"
MODULATORS_FILE = "modulators.safetensors"
TASK_FILE = "task.json"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")


def now_iso() -> str:
    """The current UTC time as the store writes it (ISO 8601, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_task_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise UserError(f"task name {name!r} must be 1-48 characters of lowercase letters, digits, '_' or '-', "
                        "starting with a letter or digit; choose another --task")
    return name


class TaskStore:
    """A task store folder (see the module docstring)."""

    def __init__(self, root):
        self.root = Path(root)

    @property
    def store_json(self) -> Path:
        return self.root / STORE_FILE

    def task_dir(self, name: str) -> Path:
        return self.root / TASKS_DIR / name

    def work_dir(self, name: str) -> Path:
        return self.root / WORK_DIR / name

    def exists(self) -> bool:
        return self.store_json.is_file()

    def info(self) -> dict:
        if not self.exists():
            raise FileNotFoundError(f"no task store at {self.root}; learn a task first with "
                                    f"`studio gan learn DIR --task NAME --store {self.root}`")
        try:
            data = json.loads(self.store_json.read_text())
        except json.JSONDecodeError as err:
            raise UserError(f"{self.store_json} is not valid JSON ({err})") from None
        if data.get("format") != STORE_FORMAT:
            raise UserError(f"{self.root} is not a lifelong GAN task store ({STORE_FILE} format "
                            f"{data.get('format')!r})")
        if data.get("version", 0) > STORE_VERSION:
            raise UserError(f"{self.store_json} has version {data['version']}; this code reads up to {STORE_VERSION}")
        return data

    def base_path(self, base=None) -> tuple[Path, str]:
        """The store's base (or `base`, which must be the same weights): (folder, sha256)."""
        data = self.info()
        ref = data["base"]
        path = Path(base) if base is not None else Path(ref["path"])
        gen = path / GENERATOR_FILE
        if not gen.is_file():
            if base is None:
                raise FileNotFoundError(f"the base of store {self.root} ({ref['path']}) is missing; "
                                        f"pass --base with its new location")
            raise FileNotFoundError(f"no GAN base at {base}; train one with `studio pretrain gan` or pass --base")
        sha = sha256_file(gen)
        if sha != ref["sha256"]:
            raise UserError(f"store {self.root} was built on another base ({ref['path']}, sha256 "
                            f"{ref['sha256'][:12]}); pass --base with that base or use another --store")
        return path, sha

    def create_or_check(self, base_path: Path, base_config: dict, base_params: int) -> str:
        """Write store.json on first use (base reference); otherwise check the base matches. Returns its sha256."""
        sha = sha256_file(base_path / GENERATOR_FILE)
        if self.exists():
            ref = self.info()["base"]
            if ref["sha256"] != sha:
                raise UserError(f"store {self.root} was built on another base ({ref['path']}, sha256 "
                                f"{ref['sha256'][:12]}); pass --base with that base or use another --store")
            if str(base_path.resolve()) != ref["path"]:  # the same weights moved: remember where they are now
                data = self.info()
                data["base"]["path"] = str(base_path.resolve())
                atomic_write_json(self.store_json, data, sort_keys=True)
            return sha
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"{self.root} is not a folder; choose another --store")
        if self.root.exists() and any(p for p in self.root.iterdir() if p.name not in (TASKS_DIR, WORK_DIR)):
            raise FileExistsError(f"{self.root} exists and is not a task store; choose another --store")
        self.root.mkdir(parents=True, exist_ok=True)
        data = {"format": STORE_FORMAT, "version": STORE_VERSION, "created_at": now_iso(),
                "base": {"path": str(base_path.resolve()), "sha256": sha, "config": base_config,
                         "g_params": int(base_params)}}
        atomic_write_json(self.store_json, data, sort_keys=True)
        return sha

    def task_names(self) -> list[str]:
        tasks = self.root / TASKS_DIR
        if not tasks.is_dir():
            return []
        metas = []
        for d in tasks.iterdir():
            if d.is_dir() and not d.name.startswith(".") and (d / TASK_FILE).is_file():
                try:
                    metas.append((json.loads((d / TASK_FILE).read_text()).get("index", 0), d.name))
                except json.JSONDecodeError:
                    continue
        return [n for _, n in sorted(metas)]

    def task_meta(self, name: str) -> dict:
        path = self.task_dir(name) / TASK_FILE
        if not path.is_file():
            known = self.task_names()
            hint = f"; tasks: {', '.join(known)}" if known else "; the store has no tasks yet"
            raise FileNotFoundError(f"no task {name!r} in store {self.root}{hint}")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise UserError(f"{path} is not valid JSON ({err})") from None

    # ---- an unfinished task: work/<name>/checkpoint.safetensors + checkpoint.json
    def checkpoint_paths(self, name: str) -> tuple[Path, Path]:
        """(checkpoint.json, checkpoint.safetensors) of task `name`'s unfinished run."""
        return self.work_dir(name) / CHECKPOINT_JSON, self.work_dir(name) / CHECKPOINT_FILE

    def read_checkpoint(self, name: str):
        """(checkpoint.json's data, its tensors) of an unfinished run of `name`, or None when there is none."""
        ckpt_json, ckpt_tensors = self.checkpoint_paths(name)
        if not (ckpt_json.is_file() and ckpt_tensors.is_file()):
            return None
        from safetensors.torch import load_file

        return json.loads(ckpt_json.read_text()), load_file(str(ckpt_tensors), device="cpu")

    def write_checkpoint(self, name: str, tensors: dict, data: dict) -> None:
        """Save an unfinished run of `name`: its tensors, then checkpoint.json (data holds at least "step")."""
        ckpt_json, ckpt_tensors = self.checkpoint_paths(name)
        ckpt_json.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_tensors(tensors, ckpt_tensors, {"format": STORE_FORMAT, "step": str(data["step"])})
        atomic_write_json(ckpt_json, {"format": STORE_FORMAT, "task": name, **data, "saved_at": now_iso()},
                          sort_keys=True)

    # ---- a finished task
    def write_task(self, name: str, tensors: dict, meta: dict, wall_start: float | None = None) -> None:
        """Write tasks/<name>/ as one folder (modulators.safetensors + task.json, renamed into place),
        then remove the task's work folder. wall_start (a time.monotonic()): sets meta's timings.wall_s."""
        tasks_root = self.root / TASKS_DIR
        tasks_root.mkdir(parents=True, exist_ok=True)
        tmp = tasks_root / f".{name}.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        atomic_save_tensors(tensors, tmp / MODULATORS_FILE, {"format": STORE_FORMAT, "task": name})
        if wall_start is not None:
            meta["timings"]["wall_s"] = round(time.monotonic() - wall_start, 3)
        atomic_write_json(tmp / TASK_FILE, meta, sort_keys=True)
        os.rename(tmp, self.task_dir(name))
        work = self.work_dir(name)
        if work.exists():
            shutil.rmtree(work)
            if not any((self.root / WORK_DIR).iterdir()):
                (self.root / WORK_DIR).rmdir()


def list_tasks(store) -> list[dict]:
    """One summary per task, in learning order."""
    st = TaskStore(store)
    st.info()
    out = []
    for name in st.task_names():
        m = st.task_meta(name)
        out.append({
            "name": name, "index": m.get("index"), "created_at": m.get("created_at"),
            "images": len(m.get("images", [])), "iters": m["config"]["train"]["iters"],
            "rank": m["config"]["left"]["rank"], "mode_seeking": m["config"]["mode_seeking"]["enabled"],
            "storage_params": m["storage"]["params"], "storage_percent_of_G": m["storage"]["percent_of_G"],
            "train_s": m["timings"]["train_s"], "losses": m.get("losses", {}),
        })
    return out


def unfinished_tasks(store) -> list[dict]:
    """Runs under work/ that were stopped or killed: [{"name", "step", "iters"}]."""
    work = Path(store) / WORK_DIR
    out = []
    if work.is_dir():
        for d in sorted(work.iterdir()):
            j = d / CHECKPOINT_JSON
            if j.is_file():
                try:
                    data = json.loads(j.read_text())
                except json.JSONDecodeError:
                    continue
                out.append({"name": d.name, "step": data.get("step"), "iters": data.get("iters")})
    return out
