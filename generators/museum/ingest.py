"""Batch ingestion: every sub-folder of a folder is a style, learnt in order.

Semantics that protect the user's work:
- a style whose name is in the museum with the same image hashes is skipped (already learnt);
- the same name with different images is refused, unless `new_version=True`, which learns it
  as `<name>-v2` (then -v3, ...) beside the original: nothing learnt is ever replaced;
- an interrupted style (its checkpoint under museum/work/<name>) resumes where it stopped,
  if its images are unchanged; otherwise its stale checkpoint is discarded when the task starts
  (planning reads, it never deletes);
- hidden folders (and, with order.txt, the folders it does not name) are skipped, each with why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from generators.errors import UserError
from generators.files import CHECKPOINT_FILE
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


def plan(root: Path, museum: Museum, resolution: int, new_version: bool = False) -> list[PlanItem]:
    folders, skipped = style_order(root)
    items, names = [], set()
    for folder in folders:
        try:
            style = read_style_folder(folder, resolution)
        except UnusableStyle as err:
            items.append(PlanItem(folder, folder.name, "invalid", err.reason, rejected=err.rejected, images=err.usable))
            continue
        except (ValueError, NotADirectoryError) as err:
            items.append(PlanItem(folder, folder.name, "invalid", str(err)))
            continue
        if style.name in names:
            items.append(PlanItem(folder, style.name, "invalid", f"another folder in {root} is also named {style.name!r}"))
            continue
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
            if hashes == style.hashes:
                item.action, item.reason = "resume", "continues its interrupted training"
            else:  # planning deletes nothing: engine.learn discards the checkpoint when it starts
                item.reason = "starts over: its interrupted training used other images"
        items.append(item)
    return items + [PlanItem(folder, folder.name, "skip", why) for folder, why in skipped]
