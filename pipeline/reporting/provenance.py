"""What produced a run: the settings it used, the code version and the Python environment."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from s4net.io.atomic import atomic_write_text, write_json

REPO = Path(__file__).resolve().parents[2]  # pipeline/reporting/provenance.py -> the repository


def code_version() -> dict[str, Any]:
    """Package versions and, in a git checkout, ``git describe --always --dirty``."""
    from pipeline import __version__ as pipeline_version
    from s4net import __version__ as s4net_version

    git = None
    if (REPO / ".git").exists():
        try:
            git = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                                 text=True, timeout=30, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            git = None
    return {"s4net": s4net_version, "pipeline": pipeline_version, "git": git, "python": sys.version.split()[0],
            "platform": platform.platform()}


def pip_freeze() -> str:
    """``name==version`` of every installed distribution, sorted (what ``pip freeze`` lists)."""
    names = {f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions() if d.metadata["Name"]}
    return "".join(f"{line}\n" for line in sorted(names, key=str.lower))


def write_provenance(out: str | os.PathLike, settings: dict[str, Any]) -> None:
    """``settings.json``, ``code.json`` and ``pip_freeze.txt`` in ``out`` (each written atomically)."""
    out = Path(out)
    write_json(out / "settings.json", settings, indent=2)
    write_json(out / "code.json", code_version(), indent=2)
    atomic_write_text(out / "pip_freeze.txt", pip_freeze())
