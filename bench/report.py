"""What every benchmark here does with its JSON report: print it, and write it atomically when asked."""

from __future__ import annotations

import json
from pathlib import Path

from s4net.io.atomic import atomic_write_text


def emit(report: dict, out: Path | None) -> None:
    """Print ``report`` as indented JSON; also write it to ``out`` (temp file + rename) when given."""
    text = json.dumps(report, indent=2)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, text + "\n")
