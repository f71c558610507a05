"""Uploads: every file the browser sends is checked for type, size and count (images must decode) and
copied under STUDIO_HOME/uploads with a sanitized name; zips are unpacked safely; exports are zipped."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

from generators.files import temporary_path
from studio.webapp.shared import (IMAGE_SUFFIXES, MAX_FILE_BYTES, MAX_UPLOAD_BYTES, MAX_ZIP_BYTES, MAX_ZIP_MEMBERS,
                                  SAFE_NAME, UserError)


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
    tmp = temporary_path(out_zip)  # zipfile writes the archive itself: to the temporary name, then renamed
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                zf.write(path, Path(folder.name) / path.relative_to(folder))
    os.replace(tmp, out_zip)
    return out_zip
