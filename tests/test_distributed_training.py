"""Every trainer under torchrun on this CPU (gloo, 2 processes), launched as the README tells a user to.

(a) 2 ranks with global batch B end where 1 process with batch B ends, within float tolerance;
(b) a 2-rank run killed and resumed with 2 ranks ends with the uninterrupted 2-rank weights;
(c) a 2-rank checkpoint resumes with 1 process;
(d) only rank 0 writes: the files of a 1-process run, no duplicate metrics line, no temporary;
(e) when one rank dies, the run exits non-zero within a bounded time;
(f) SIGTERM mid-run leaves a checkpoint at the current step, exits 75 (directly) or non-zero (torchrun),
    and the rerun ends with the uninterrupted weights.

Tolerance of (a): the gradients of the two ranks are summed in another order than one backward sums
them, so the weights differ in float32 rounding (~1e-7) after one step. Training from scratch with
BatchNorm on these tiny batches amplifies such a difference quickly (a 1e-7 perturbation of the
segmenter's weights after one step is 1e-4 after the next, measured), so (a) compares after two
steps (one for the segmenter) with ``ATOL``. Without ``--sync-bn`` each rank normalises with its own
half batch, and the same check fails (the control test, with -m slow). make test runs the CAM
classifier's (a), (c), (d), (e) and (f); -m slow adds the other trainers' (a) and (f) and (b).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import SMALL_S4NET

BIN = Path(sys.executable).parent
ATOL = 1e-4
# A 2-rank state resumed on one process for up to 4 steps: 7e-7 here, but 1.15e-4 once on the CI machine (another
# CPU's kernels, differences grown over the steps); the same check without --sync-bn differs by about 0.2.
RESUME_ATOL = 1e-3
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "S4NET_DIST_TIMEOUT": "60"}


def torchrun(command: list[str], processes: int = 2) -> list[str]:
    """The README's launch line: ``torchrun --standalone --nproc-per-node N --no-python <command>``."""
    return [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", str(processes), "--no-python", *command]


def run(command: list[str], expect: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=600)
    assert result.returncode == expect, result.stderr[-3000:]
    return result


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def max_difference(a: Path, b: Path) -> float:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    return max((first[k].double() - second[k].double()).abs().max().item() for k in first
               if first[k].is_floating_point())


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def metrics_iterations(out: Path) -> list[int]:
    return [json.loads(line)["iteration"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def files_of(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}


class Trainer:
    """One trainer's command line at a size this CPU runs in seconds."""

    def __init__(self, name: str, final: str, make) -> None:
        self.name, self.final, self.make = name, final, make

    def command(self, out: Path, iterations: int, *extra: str) -> list[str]:
        return [*self.make(out, iterations), *extra]


@pytest.fixture(scope="module")
def trainers(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Trainer]:
    config = tmp_path_factory.mktemp("cfg") / "small.yaml"
    config.write_text(yaml.safe_dump({"backbone": "resnet18", **{k: list(v) if isinstance(v, tuple) else v
                                                                  for k, v in SMALL_S4NET.items()
                                                                  if k != "image_size"}}))
    salient, imagenet = tiny_world / "salient", tiny_world / "imagenet"
    common = ["--device", "cpu", "--log-every", "1", "-q"]

    def s4net(out: Path, iterations: int) -> list[str]:
        return [str(BIN / "s4net"), "train", "--annotations", str(salient / "train.json"), "--images",
                str(salient / "images"), "--out", str(out), "--model-config", str(config), "--size", "64",
                "--iterations", str(iterations), "--batch-size", "2", "--lr", "0.01", "--lr-steps", "100",
                "--checkpoint-every", "100", "--seed", "3", "--cpu-bf16", "off", *common]

    def segmenter(out: Path, iterations: int) -> list[str]:
        return [str(BIN / "wsss"), "train-segmenter", "--images", str(imagenet), "--labels", str(imagenet / "masks"),
                "--out", str(out), "--encoder", "resnet18", "--iterations", str(iterations), "--batch-size", "2",
                "--crop", "48", "--checkpoint-every", "100", "--seed", "5", *common]

    def cam(out: Path, iterations: int) -> list[str]:
        return [str(BIN / "wsss"), "train-cam", "--images", str(imagenet), "--out", str(out), "--backbone", "resnet18",
                "--size", "64", "--iterations", str(iterations), "--batch-size", "4", "--seed", "1",
                "--checkpoint-every", "100", *common]

    def peer(out: Path, iterations: int) -> list[str]:
        return [str(BIN / "s4net"), "peer", "train", "--annotations", str(salient / "train.json"), "--images",
                str(salient / "images"), "--out", str(out), "--backbone", "resnet18", "--size", "64", "--iterations",
                str(iterations), "--batch-size", "2", "--lr", "0.01", "--lr-steps", "100", "--warmup", "0",
                "--checkpoint-every", "100", "--seed", "3", "--cpu-bf16", "off", *common]

    return {"s4net": Trainer("s4net", "model_final.pt", s4net),
            "segmenter": Trainer("segmenter", "model_final.pt", segmenter),
            "cam": Trainer("cam", "cam.pt", cam),
            "peer": Trainer("peer", "model_final.pt", peer)}


STEPS = {"s4net": 2, "segmenter": 1, "cam": 2, "peer": 2}


@pytest.mark.parametrize("name", ["cam", *(pytest.param(n, marks=pytest.mark.slow)
                                           for n in ("s4net", "segmenter", "peer"))])
def test_two_ranks_train_as_one_process_and_only_rank_0_writes(trainers, tmp_path: Path, name: str) -> None:
    trainer, steps = trainers[name], STEPS[name]
    one, two = tmp_path / "one", tmp_path / "two"
    run(trainer.command(one, steps))
    run(torchrun(trainer.command(two, steps, "--sync-bn")))
    assert max_difference(one / trainer.final, two / trainer.final) < ATOL  # (a)
    # (d) rank 1 wrote nothing of its own: the same files, one metrics line per iteration, no temporary
    assert files_of(two) == files_of(one)
    assert metrics_iterations(two) == list(range(1, steps + 1))
    recorded = json.loads((two / "train_config.json").read_text())
    assert recorded["world_size"] == 2 and recorded["sync_bn"] is True


@pytest.mark.slow  # the control of (a): one more torchrun launch
def test_without_sync_bn_two_ranks_differ_so_the_tolerance_can_fail(trainers, tmp_path: Path) -> None:
    trainer = trainers["cam"]
    run(trainer.command(tmp_path / "one", 2))
    run(torchrun(trainer.command(tmp_path / "own_bn", 2)))
    assert max_difference(tmp_path / "one" / trainer.final, tmp_path / "own_bn" / trainer.final) > 10 * ATOL


@pytest.mark.slow  # the check itself runs by default in tests/test_engine.py
def test_a_global_batch_that_does_not_divide_is_refused_in_one_line(trainers, tmp_path: Path) -> None:
    command = trainers["cam"].command(tmp_path, 2)
    command[command.index("--batch-size") + 1] = "3"
    result = run(torchrun(command), expect=1)
    assert "the batch size 3 does not divide over 2 processes" in result.stderr


def wait_for_lines(path: Path, lines: int, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) >= lines:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never reached {lines} lines (exit {process.poll()})")


def workers_of(launcher: int) -> dict[int, int]:
    """RANK -> pid of torchrun's worker processes (children of ``launcher``)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == launcher:
            rank = next((v.split(b"=", 1)[1] for v in environ if v.startswith(b"RANK=")), None)
            if rank is not None:
                found[int(rank)] = int(entry.name)
    return found


@pytest.fixture(scope="module")
def cam_reference(trainers, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 2-rank CAM run of 6 iterations."""
    out = tmp_path_factory.mktemp("cam_two")
    run(torchrun(trainers["cam"].command(out, 6, "--sync-bn")))
    return out / "cam.pt"


def test_sigterm_checkpoints_the_current_step_and_both_world_sizes_resume(trainers, tmp_path: Path,
                                                                          cam_reference: Path) -> None:
    """(f) and (c): SIGTERM to torchrun mid-run; resumed with 2 ranks it ends bit-equal, with 1 process close."""
    from pipeline.cues.cam import read_cam

    trainer = trainers["cam"]
    out = tmp_path / "run"
    process = subprocess.Popen(torchrun(trainer.command(out, 6, "--sync-bn")), env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_lines(out / "metrics.jsonl", 2, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0 and "run the same command again to resume" in stderr, stderr[-2000:]
    stopped = read_cam(out / "checkpoints" / "last.pt")["iteration"]
    assert 2 <= stopped < 6 and max(metrics_iterations(out)) == stopped  # no periodic checkpoint: the signal's
    assert not (out / "cam.pt").exists()
    resumed_one = tmp_path / "one"
    resumed_one.mkdir()
    (resumed_one / "checkpoints").mkdir()
    os.link(out / "checkpoints" / "last.pt", resumed_one / "checkpoints" / "last.pt")
    run(torchrun(trainer.command(out, 6, "--sync-bn")))
    assert_same_weights(out / "cam.pt", cam_reference)
    assert metrics_iterations(out) == list(range(1, 7))
    run(trainer.command(resumed_one, 6))  # (c): the 2-rank state, one process
    assert max_difference(resumed_one / "cam.pt", cam_reference) < RESUME_ATOL


@pytest.mark.slow  # by default a 2-rank run is stopped by SIGTERM and resumed (above)
def test_killed_two_rank_run_resumes_to_the_same_weights(trainers, tmp_path: Path, cam_reference: Path) -> None:
    """(b): SIGKILL to the whole process group after a periodic checkpoint, then the same command."""
    command = trainers["cam"].command(tmp_path, 6, "--sync-bn")
    command[command.index("--checkpoint-every") + 1] = "2"
    process = subprocess.Popen(torchrun(command), env=ENV, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    wait_for_lines(tmp_path / "metrics.jsonl", 3, process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "cam.pt").exists()
    run(torchrun(command))
    assert_same_weights(tmp_path / "cam.pt", cam_reference)
    assert metrics_iterations(tmp_path) == list(range(1, 7))


def test_when_one_rank_dies_the_run_fails_within_a_bounded_time(trainers, tmp_path: Path) -> None:
    """(e): rank 1 is killed mid-run; torchrun stops rank 0 and exits non-zero instead of hanging."""
    process = subprocess.Popen(torchrun(trainers["cam"].command(tmp_path, 200, "--sync-bn")),
                               env=ENV, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_lines(tmp_path / "metrics.jsonl", 1, process)
        victim = workers_of(process.pid)[1]
        os.kill(victim, signal.SIGKILL)
        killed = time.time()
        assert process.wait(timeout=90) != 0
        assert time.time() - killed < 90
        assert not workers_of(process.pid)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.parametrize("name", ["cam", *(pytest.param(n, marks=pytest.mark.slow)
                                           for n in ("s4net", "segmenter", "peer"))])
def test_sigterm_without_torchrun_exits_75_with_the_state_saved(trainers, tmp_path: Path, name: str) -> None:
    """(f) for one process: the documented status, a checkpoint at the step, and the rerun's same weights."""
    trainer = trainers[name]
    reference = tmp_path / "straight"
    run(trainer.command(reference, 8))
    out = tmp_path / "run"
    command = trainer.command(out, 8)
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_lines(out / "metrics.jsonl", 1, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    if process.returncode == 0:  # the run ended before the signal landed: nothing to resume, try again
        pytest.skip("the run finished before SIGTERM arrived")
    assert process.returncode == 75, stderr[-2000:]
    assert "run the same command again to resume" in stderr.strip().splitlines()[-1]
    run(command)
    assert_same_weights(out / trainer.final, reference / trainer.final)
