"""Where pybuild keeps its state."""

from __future__ import annotations

import os
from pathlib import Path


def default_root() -> Path:
    """$PYBUILD_ROOT; else /var/lib/pybuild for root, $XDG_DATA_HOME/pybuild for a user."""
    env = os.environ.get("PYBUILD_ROOT")
    if env:
        return Path(env).absolute()
    if os.geteuid() == 0:
        return Path("/var/lib/pybuild")
    home = os.path.expanduser("~")
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share")
    return Path(xdg) / "pybuild"
