"""Keep the finished runs of an experiments target beside the code, so a fresh checkout does not train them again.

Usage: python tools/keep_runs.py RESULTS/experiments KEPT

Copies every finished run's ``test_metrics.json`` (``runs/RUN/seedS/`` and ``peers/RUN/seedS/``) and, when present,
the ``gradient_maps/`` files from the experiments folder of a results directory into KEPT with the same layout (each
write atomic). With ``experiments.kept: KEPT`` in the workflow config, the ``experiments`` target reads a kept run
from there and does not train it (workflows/rules/common.smk, ``kept_or_run``). A kept file is the record: one
that differs from the run's is left as it is and reported, never overwritten.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from s4net.io.atomic import atomic_write_bytes  # noqa: E402

log = logging.getLogger("keep_runs")


def finished_files(experiments: Path) -> list[Path]:
    """The files to keep, relative to ``experiments``: run and peer metrics, and the gradient maps."""
    found = [*experiments.glob("runs/*/seed*/test_metrics.json"), *experiments.glob("peers/*/seed*/test_metrics.json")]
    maps = experiments / "gradient_maps"
    if maps.is_dir():
        found += [path for path in maps.rglob("*") if path.is_file() and not path.name.startswith(".")]  # no markers
    return sorted(path.relative_to(experiments) for path in found)


def keep_runs(experiments: Path, kept: Path) -> dict[str, list[str]]:
    """Copy what :func:`finished_files` finds into ``kept``; returns the names copied, already kept and differing."""
    if not experiments.is_dir():
        raise SystemExit(f"keep_runs: error: {experiments}: no such experiments folder")
    outcome: dict[str, list[str]] = {"copied": [], "kept": [], "differs": []}
    for relative in finished_files(experiments):
        data, target = (experiments / relative).read_bytes(), kept / relative
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, data)
            outcome["copied"].append(str(relative))
        elif target.read_bytes() == data:
            outcome["kept"].append(str(relative))
        else:
            log.warning("%s differs from the kept %s; left as it is", experiments / relative, target)
            outcome["differs"].append(str(relative))
    return outcome


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    outcome = keep_runs(Path(args[0]), Path(args[1]))
    print(f"copied {len(outcome['copied'])}, already kept {len(outcome['kept'])}, "
          f"differing (left as kept) {len(outcome['differs'])} into {args[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
