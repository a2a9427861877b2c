"""Run a workflow job's command on its GPUs: ``python -m pipeline.launch --gpus K [--single-gpu-job NAME] -- COMMAND``.

- K = 0: COMMAND runs as it is (exec: no torchrun, no GPU claim).
- K = 1: COMMAND runs on one GPU; K > 1: under ``torchrun --standalone --nproc-per-node K --no-python``, one
  process per GPU (the trainers split their global batch over the ranks). ``--single-gpu-job NAME`` marks a
  command that is no trainer: more than one GPU is refused, naming NAME.
- Under SLURM (``SLURM_JOB_ID`` set) the scheduler has chosen the GPUs (CUDA_VISIBLE_DEVICES) and signals every
  process of the step itself: the command replaces the launcher (exec). Elsewhere the launcher claims K free
  GPUs of the machine (:mod:`pipeline.gpu_claims`), waiting while fewer are free, sets CUDA_VISIBLE_DEVICES,
  runs the command in a session of its own and holds the claim until it ends; SIGTERM, SIGUSR1, SIGINT and
  SIGHUP reach it once (SIGUSR1 as SIGTERM under torchrun, which does not pass SIGUSR1 on), and its exit
  status is the launcher's.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipeline.gpu_claims import GpuError, claim_gpus, gpu_pool, lock_folder

logger = logging.getLogger(__name__)

PROG = "python -m pipeline.launch"
FORWARDED = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT, signal.SIGHUP)
# torchrun's wait, after SIGTERM, for its ranks to finish their step and checkpoint before it SIGKILLs them
# (torch's default is 30 s); an environment value of TORCH_ELASTIC_SHUTDOWN_TIMEOUT is kept
SHUTDOWN_TIMEOUT_S = 120
DEFAULT_ADVICE = "give the rule a gpu resource of at most 1"


class LaunchError(RuntimeError):
    """A launch that cannot be made as asked."""


class CommandNotFound(LaunchError):
    """The command to launch is not on PATH."""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one :class:`LaunchError` line, not usage and error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise LaunchError(message)


def torchrun_prefix(python: str = sys.executable) -> list[str]:
    """``torchrun`` beside ``python`` (the venv's), else ``python -m torch.distributed.run``."""
    beside = Path(python).parent / "torchrun"
    return [str(beside)] if os.access(beside, os.X_OK) else [python, "-m", "torch.distributed.run"]


def child_argv(gpus: int, command: Sequence[str], python: str = sys.executable) -> list[str]:
    """The argv that runs ``command`` on ``gpus`` GPUs: itself for at most one, else torchrun with a rank per GPU."""
    if gpus <= 1:
        return list(command)
    return [*torchrun_prefix(python), "--standalone", "--nproc-per-node", str(gpus), "--no-python", *command]


def scheduler_assigns_gpus(env: Mapping[str, str]) -> bool:
    """Whether a scheduler (SLURM) has given this job its GPUs already."""
    return "SLURM_JOB_ID" in env


def child_env(gpus: int, env: Mapping[str, str], claimed: Sequence[str] | None) -> dict[str, str]:
    """``env`` with CUDA_VISIBLE_DEVICES set to the claimed GPUs, and torchrun's shutdown wait when K > 1."""
    out = dict(env)
    if claimed is not None:
        out["CUDA_VISIBLE_DEVICES"] = ",".join(claimed)
    if gpus > 1:
        out.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(SHUTDOWN_TIMEOUT_S))
    return out


def exit_status(returncode: int) -> int:
    """A child's exit status as a shell gives it: 128 + N for a child killed by signal N."""
    return returncode if returncode >= 0 else 128 - returncode


def run_forwarding(argv: Sequence[str], env: Mapping[str, str], pass_fds: Sequence[int] = (),
                   torchrun: bool = False) -> int:
    """Run ``argv`` in a session of its own, pass it the signals of :data:`FORWARDED` (SIGUSR1 as SIGTERM when
    ``torchrun``) until it ends, and return its exit status.

    Its own session keeps a signal sent to the launcher's process group from reaching it twice.
    """
    child: list[subprocess.Popen] = []
    pending: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        sent = signal.SIGTERM if torchrun and signum == signal.SIGUSR1 else signum
        if child:
            child[0].send_signal(sent)
        else:  # arrived before the child existed: passed on as soon as it does
            pending.append(sent)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED}
    try:
        child.append(subprocess.Popen(list(argv), env=dict(env), pass_fds=tuple(pass_fds), start_new_session=True))
        for signum in pending:
            child[0].send_signal(signum)
        return exit_status(child[0].wait())
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def launch(gpus: int, command: Sequence[str], env: Mapping[str, str], single_gpu_job: str | None = None,
           advice: str = DEFAULT_ADVICE) -> int:
    """Run ``command`` on ``gpus`` GPUs as the module docstring says; returns its exit status (exec: no return)."""
    if gpus < 0:
        raise LaunchError(f"--gpus must be >= 0, got {gpus}")
    if single_gpu_job and gpus > 1:
        raise LaunchError(f"{single_gpu_job} runs one GPU per job, not {gpus}; {advice}")
    argv = child_argv(gpus, command)
    if gpus == 0 or scheduler_assigns_gpus(env):
        if gpus:
            logger.info("GPUs %s from the scheduler", env.get("CUDA_VISIBLE_DEVICES", "(CUDA_VISIBLE_DEVICES unset)"))
        try:
            os.execvpe(argv[0], argv, child_env(gpus, env, None))
        except FileNotFoundError:
            raise CommandNotFound(f"{argv[0]}: command not found") from None
    claim = claim_gpus(gpus, gpu_pool(env), lock_folder(env))
    try:
        logger.info("GPU(s) %s claimed (CUDA_VISIBLE_DEVICES)", ",".join(claim.ids))
        return run_forwarding(argv, child_env(gpus, env, claim.ids), claim.fds, torchrun=gpus > 1)
    except FileNotFoundError:
        raise CommandNotFound(f"{argv[0]}: command not found") from None
    finally:
        claim.release()


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """The launcher's options (before ``--``) and the command (after it)."""
    argv = list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = _Parser(prog=PROG, usage=f"{PROG} --gpus K [--single-gpu-job NAME [--advice TEXT]] -- COMMAND ...",
                     description="Run a workflow job's command on its K GPUs (torchrun for K > 1), pinned to free "
                                 "GPUs outside SLURM.")
    parser.add_argument("--gpus", type=int, required=True, help="GPUs of the job (its gpu resource)")
    parser.add_argument("--single-gpu-job", metavar="NAME", help="the command is no trainer: refuse --gpus > 1")
    parser.add_argument("--advice", default=DEFAULT_ADVICE, help="what the refusal of --single-gpu-job suggests")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    if not command:
        raise LaunchError("no command: put it after --, as in: --gpus 2 -- s4net train ...")
    return args, command


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; a bad request ends with one line on stderr and status 2, a command not found with 127,
    a lock folder that cannot be used with 1."""
    logging.basicConfig(level=logging.INFO, format=f"{PROG}: %(message)s", stream=sys.stderr)
    try:
        args, command = parse(sys.argv[1:] if argv is None else argv)
        return launch(args.gpus, command, os.environ, args.single_gpu_job, args.advice)
    except CommandNotFound as exc:
        logger.error("error: %s", exc)
        return 127
    except (LaunchError, GpuError) as exc:
        logger.error("error: %s", exc)
        return 2
    except OSError as exc:  # the lock folder cannot be made or read, ...
        where = f"{exc.filename}: " if exc.filename else ""
        logger.error("error: %s%s", where, exc.strerror or exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
