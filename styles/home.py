"""STUDIO_HOME: where Studio keeps what it makes unless told otherwise (the museum, uploads,
outputs, exports, task stores, logs). One definition for the CLI and the web app."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = "~/.studio"


def studio_home(explicit: str | Path | None = None) -> Path:
    """`explicit`, else $STUDIO_HOME, else ~/.studio; `~` expanded, made absolute. An empty
    STUDIO_HOME counts as unset (not as the current folder)."""
    return Path(explicit or os.environ.get("STUDIO_HOME") or DEFAULT_HOME).expanduser().resolve()


def default_museum_dir(home: str | Path | None = None) -> Path:
    """The museum a command uses when no --museum is given: STUDIO_HOME/museum."""
    return studio_home(home) / "museum"
