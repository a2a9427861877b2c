"""Atomic file writes: a temporary file in the target folder, fsync, then rename (and JSON read back).

A job killed mid-write leaves at most a ``.tmp-<host>-<pid>-*`` file, never a truncated
output under the final name that a rerun would trust; :func:`remove_stale_temporaries`
clears such leftovers of dead writers.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
from pathlib import Path
from typing import Any, Iterator

from s4net.errors import InputError

TMP_PREFIX = ".tmp-"


def _owner_tag() -> str:
    """``<host>-<pid>-``: who writes a temporary file, so a later run can tell a dead writer's leftovers."""
    return f"{socket.gethostname()}-{os.getpid()}-"


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete ``.tmp-*`` files under ``folder`` left by killed writers of this host; returns how many.

    Only files whose writer process (named in the file name) no longer runs here are
    removed, so concurrent jobs writing into the same folder are left alone.
    """
    host = socket.gethostname()
    removed = 0
    for path in Path(folder).rglob(f"{TMP_PREFIX}{host}-*"):
        pid_text = path.name[len(TMP_PREFIX) + len(host) + 1 :].split("-", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _create_temporary(folder: Path, suffix: str) -> Path:
    """A new empty ``.tmp-<host>-<pid>-<random><suffix>`` in ``folder``, with the mode a plain ``open()`` gives.

    ``os.open`` with mode 0o666 lets the kernel apply the umask, as it does for any new file
    (``mkstemp`` would make it 0600, unreadable to the others of a cluster group).
    """
    while True:
        path = folder / f"{TMP_PREFIX}{_owner_tag()}{secrets.token_hex(6)}{suffix}"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The caller writes the temporary file by any means (PIL, json, ...). On an
    exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path.parent, path.suffix)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename is None:
            # a failed write() names no file (a full disk, say): name the output it was for
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    """Write ``obj`` as JSON atomically, keys in insertion order, newline-terminated."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False, separators=None if indent else (",", ":"))
    atomic_write_text(path, text + "\n")


def read_json(path: str | os.PathLike, what: str = "json") -> Any:
    """A JSON document; a missing or unparsable file is an :class:`InputError` saying it is not a readable ``what``."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable {what} ({exc.__class__.__name__})") from None
