"""Where a text-to-image base comes from, decided from its name and the file system alone.

No torch or diffusers here: the CLI checks `--base` with it before those imports, so a wrong
path fails in a moment rather than after ~20 s of importing.
"""

from __future__ import annotations

import re
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "assets"
# Embedded bases that left assets/, each with the commit whose tree last held it: a museum or a fit
# made on one loads it again, by its name, once it is restored from that commit.
RETIRED = {"studio-mini": "3361eacc483f8c10a3e8a89e31da62ea218d5a70"}
# The embedded bases, trained here on the mini world, by name. A museum or a fit records its base's
# name, so one made on an earlier default keeps asking for the base it was made on.
EMBEDDED = {"studio-mini-2": ASSETS / "studio-mini-2", **{name: ASSETS / name for name in RETIRED}}
DEFAULT_NAME = "studio-mini-2"
DEFAULT_BASE = EMBEDDED[DEFAULT_NAME]
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def base_path(base: str | Path | None) -> str | Path:
    """Where `base` is: an embedded base's folder for its name (None: the default's), else `base` as
    given (a folder, a single file or a hub id). A local folder named like an embedded base is
    reached as ./NAME."""
    if base is None:
        return DEFAULT_BASE
    return EMBEDDED.get(str(base), base)


def base_name(base: str | Path | None) -> str:
    """A stable name for a base: an embedded base's name (None: the default's), else the path or hub id."""
    path = Path(base_path(base)).resolve()
    for name, folder in EMBEDDED.items():
        if path == folder.resolve():
            return name
    return str(base)


def base_source(base: str | Path | None) -> str:
    """'folder' (a diffusers pipeline folder), 'file' (a single-file SD 1.x/2.x or SDXL .safetensors
    checkpoint with its config folder, generators/bases.py) or 'hub' (a hub id); anything else
    raises FileNotFoundError with one line that says what to pass instead."""
    source = base_path(base)
    path = Path(source)
    name = base_name(base)
    if name in RETIRED and not path.exists():
        raise FileNotFoundError(f"the embedded base {name!r} left the repository after commit {RETIRED[name][:12]}; what was "
                                f"made on it loads again once it is restored: git restore --source={RETIRED[name]} --worktree -- assets/{name}")
    if path.is_file():
        from generators.bases import family_of_file, single_file_config

        try:
            family_of_file(path)  # the tensor names only: the header, no weights
        except ValueError as err:
            raise FileNotFoundError(str(err)) from None
        single_file_config(path)
        return "file"
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(
                f"{path} is not a diffusers pipeline folder (no model_index.json); "
                "pass a StableDiffusionPipeline or StableDiffusionXLPipeline folder saved with save_pretrained, a single "
                ".safetensors checkpoint, or a hub id"
            )
        return "folder"
    if HUB_ID.match(str(source)):
        return "hub"
    raise FileNotFoundError(f"base {source!r} is neither an existing pipeline folder or checkpoint file nor a hub id (owner/name)")
