"""Writing tensor files with the permissions every other new file gets."""

from __future__ import annotations

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
