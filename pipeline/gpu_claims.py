"""Which GPUs of a shared machine a job may use: the machine's pool, and claims held as lock files.

Each GPU id has a lock file; a job claims a GPU by holding a non-blocking ``flock`` on it. The lock lives as
long as a descriptor on it is open (this process's, or a child's it was passed to) and goes away by itself
when the holders die, so a killed job never leaves a GPU claimed.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

IDS_ENV = "WSSS_GPU_IDS"  # comma-separated ids of the GPUs jobs may claim (else CUDA_VISIBLE_DEVICES, else all)
LOCKS_ENV = "WSSS_GPU_LOCKS"  # the lock folder (default: one per user in the temp dir); share it to share claims
POLL_S = 2.0  # seconds between tries while too few GPUs are free


class GpuError(RuntimeError):
    """A GPU request this machine cannot meet."""


@dataclass
class GpuClaim:
    """GPUs held by this process (and by the children its ``fds`` are passed to) until :meth:`release`."""

    ids: list[str]
    fds: list[int]

    def release(self) -> None:
        """Close the lock descriptors: the GPUs are free once no child holds them either."""
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()


def split_ids(text: str) -> list[str]:
    """``"0, 1,2"`` -> ``["0", "1", "2"]`` (empty parts dropped)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def count_gpus() -> int:
    """The GPUs of this machine: the ``GPU n:`` lines of ``nvidia-smi -L``, else ``torch.cuda.device_count()``."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60, check=True).stdout
            return sum(1 for line in listing.splitlines() if line.startswith("GPU "))
        except (OSError, subprocess.SubprocessError) as exc:
            logger.warning("nvidia-smi -L failed (%s); asking torch how many GPUs there are", exc)
    import torch  # only when nvidia-smi cannot tell: importing torch takes seconds

    return torch.cuda.device_count()


def gpu_pool(env: Mapping[str, str]) -> list[str]:
    """The GPU ids jobs may claim: ``$WSSS_GPU_IDS``, else ``$CUDA_VISIBLE_DEVICES`` (a restriction the user set
    for the whole workflow), else every GPU of the machine."""
    for name in (IDS_ENV, "CUDA_VISIBLE_DEVICES"):
        if name in env:
            return split_ids(env[name])
    return [str(index) for index in range(count_gpus())]


def lock_folder(env: Mapping[str, str]) -> Path:
    """``$WSSS_GPU_LOCKS``, else ``<temp dir>/wsss-gpu-locks-<uid>``; made if missing."""
    default = Path(tempfile.gettempdir()) / f"wsss-gpu-locks-{os.getuid()}"
    folder = Path(env[LOCKS_ENV]) if env.get(LOCKS_ENV) else default
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def lock_path(folder: Path, gpu_id: str) -> Path:
    """The lock file of one GPU id (ids such as UUIDs made safe as file names)."""
    return folder / f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', gpu_id)}.lock"


def _open_lock(path: Path) -> int:
    """A read-only descriptor on a lock file, made if missing (flock needs no write access, so the folder of
    several users works; an existing file is opened without O_CREAT, which sticky temp folders refuse on
    other users' files)."""
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)


def try_claim(count: int, ids: Sequence[str], folder: Path) -> GpuClaim | None:
    """``count`` of ``ids`` whose locks were free, now held; None (holding nothing) when fewer are free."""
    claim = GpuClaim([], [])
    for gpu_id in ids:
        fd = _open_lock(lock_path(folder, gpu_id))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        claim.ids.append(gpu_id)
        claim.fds.append(fd)
        if len(claim.ids) == count:
            return claim
    claim.release()  # all or nothing: holding some while waiting for more could deadlock two jobs
    return None


def claim_gpus(count: int, ids: Sequence[str], folder: Path, poll_s: float = POLL_S) -> GpuClaim:
    """``count`` distinct GPUs of ``ids``; while fewer are free, waits (never shares one)."""
    if count > len(ids):
        offered = ",".join(ids) or "none"
        raise GpuError(f"{count} GPU(s) asked for but this machine offers {len(ids)} ({offered}); lower the config's "
                       f"gpus (or the gpu resource), or list the GPUs in {IDS_ENV}")
    started = time.monotonic()
    announced = False
    while (claim := try_claim(count, ids, folder)) is None:
        if not announced:
            logger.info("waiting for %d free GPU(s) of %s: other jobs hold the rest (lock files in %s)",
                        count, ",".join(ids), folder)
            announced = True
        time.sleep(poll_s)
    if announced:
        logger.info("GPU(s) %s free after %.0f s", ",".join(claim.ids), time.monotonic() - started)
    return claim
