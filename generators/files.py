"""Writing files: tensor files with the permissions every other new file gets, and every store's
atomic write (a temporary name, then a rename)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def umask() -> int:
    """This process's umask, read without changing it where Linux shows it (os.umask can only
    read it by setting it, which would race with threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str | Path) -> None:
    """Give a file the mode open() would have: 0o666 less the umask."""
    os.chmod(path, 0o666 & ~umask())


def save_tensors(tensors: dict, path: str | Path, metadata: dict | None = None) -> None:
    """safetensors' save_file, with the file's mode as any other new file's: safetensors 0.8
    writes through a private temporary file, so its files came out 0600 (exports unreadable to
    the other users and tools they are meant for)."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)
    honour_umask(path)


# --------------------------------------------------------------------------- atomic writes
#
# Every store's rule (docs/architecture.md, Stores): a file is written under a temporary name
# beside its final one and renamed over it, so a kill at any moment leaves the old file or the new
# one, never half of one. The temporary name is `<name>.tmp` (`.<name>.tmp` with hidden=True, for
# folders a user or a loader lists, e.g. an export's class folders); the stores' clean-ups know both.

CHECKPOINT_FILE = "checkpoint.safetensors"  # an unfinished unit of training (museum task, GAN, synthetic fit)
CHECKPOINT_JSON = "checkpoint.json"  # a GAN checkpoint's step and options, beside its CHECKPOINT_FILE (base or task)


def temporary_path(path: str | Path, hidden: bool = False) -> Path:
    """The temporary name `path` is written under before it is renamed into place."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp" if hidden else f"{path.name}.tmp")


def atomic_write_bytes(path: str | Path, data: bytes, hidden: bool = False) -> None:
    """Write `data` to `path` all at once: to the temporary name, flushed to disk, then renamed."""
    path = Path(path)
    tmp = temporary_path(path, hidden)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: str | Path, text: str, hidden: bool = False) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), hidden)


def atomic_write_json(path: str | Path, obj, indent: int | None = 2, sort_keys: bool = False,
                      ensure_ascii: bool = True, newline: bool = True, hidden: bool = False) -> None:
    """json.dumps(obj) (the layout each file has always had: the options are json.dumps's, plus a
    final newline), written atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii)
    atomic_write_text(path, text + "\n" if newline else text, hidden)


def atomic_save_tensors(tensors: dict, path: str | Path, metadata: dict | None = None, hidden: bool = False) -> None:
    """save_tensors (contiguous CPU copies, the umask's mode), to the temporary name, then renamed."""
    path = Path(path)
    tmp = temporary_path(path, hidden)
    save_tensors({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
    os.replace(tmp, path)


def sha256_file(path: str | Path) -> str:
    """The file's sha256 (hex), read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
