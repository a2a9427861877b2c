"""pipeline.launch: torchrun for several GPUs, GPU pinning with lock files, signals and exit status, and the
workflow's GPU requests (training jobs all of the config's gpus, other networks one, proxy labels refused more)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.gpu_claims import GpuError, claim_gpus, gpu_pool, try_claim
from pipeline.launch import child_argv, child_env

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEMO = REPO / "workflows" / "configs" / "demo.yaml"
IDS = ["0", "1", "2", "3"]
PROXY_ADVICE = "to use N GPUs set wsss.shards: N (one shard per job, gathered by the workflow)"

# A rank that records its GPUs and rank, then waits for the test to let it go (so claims overlap in time).
RANK = """
import os, pathlib, sys, time
out = pathlib.Path(sys.argv[1])
(out / f"rank{os.environ.get('LOCAL_RANK', '0')}").write_text(
    f"{os.environ.get('CUDA_VISIBLE_DEVICES')} {os.environ.get('WORLD_SIZE', '1')} {os.getpid()}")
deadline = time.time() + 60
while not (out.parent / "release").exists() and time.time() < deadline:
    time.sleep(0.05)
"""

# A trainer's stand-in: SIGTERM (and SIGUSR1 unless told otherwise) recorded, then exit 75 as the trainers do.
STOPPABLE = """
import os, pathlib, signal, sys, time
out = pathlib.Path(sys.argv[1])
rank = os.environ.get("LOCAL_RANK", "0")
def stop(signum, frame):
    with open(out / f"signals{rank}", "a") as handle:
        handle.write(f"{signum}\\n")
signal.signal(signal.SIGTERM, stop)
if sys.argv[2] == "usr1":
    signal.signal(signal.SIGUSR1, stop)
(out / f"ready{rank}").write_text(str(os.getpgid(0)))
deadline = time.time() + 60
while not (out / f"signals{rank}").exists() and time.time() < deadline:
    time.sleep(0.05)
time.sleep(0.5)  # a second delivery would land here
sys.exit(75)
"""


def launcher_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment outside any scheduler, with four GPU ids and a lock folder of the test's own."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES") and not key.startswith("WSSS_GPU")}
    env.update({"WSSS_GPU_IDS": ",".join(IDS), "WSSS_GPU_LOCKS": str(tmp_path / "locks"), "OMP_NUM_THREADS": "1",
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"})
    env.update(extra)
    return env


def launcher(gpus: int, command: list[str], env: dict[str, str], *options: str, **popen) -> subprocess.Popen:
    """``python -m pipeline.launch`` in a process group of its own."""
    return subprocess.Popen([sys.executable, "-m", "pipeline.launch", "--gpus", str(gpus), *options, "--", *command],
                            env=env, start_new_session=True, **popen)


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_one_gpu_runs_the_command_itself_and_more_run_it_under_torchrun(tmp_path: Path) -> None:
    command = ["s4net", "train", "--batch-size", "8"]
    python = tmp_path / "bin" / "python"
    assert child_argv(0, command, str(python)) == command and child_argv(1, command, str(python)) == command
    # no torchrun beside this python: torch's module
    assert child_argv(2, command, str(python)) == [str(python), "-m", "torch.distributed.run", "--standalone",
                                                   "--nproc-per-node", "2", "--no-python", *command]
    torchrun = tmp_path / "bin" / "torchrun"
    torchrun.parent.mkdir()
    torchrun.write_text("#!/bin/sh\n")
    torchrun.chmod(0o755)
    assert child_argv(2, command, str(python)) == [str(torchrun), "--standalone", "--nproc-per-node", "2",
                                                   "--no-python", *command]
    # torchrun gets time for its ranks to checkpoint after SIGTERM; a value already set is kept
    assert child_env(2, {}, ["2", "3"]) == {"CUDA_VISIBLE_DEVICES": "2,3", "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "120"}
    assert child_env(2, {"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "9"}, None) == {"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "9"}
    assert child_env(1, {"A": "b"}, ["1"]) == {"A": "b", "CUDA_VISIBLE_DEVICES": "1"}


def test_the_pool_is_the_listed_ids_else_the_visible_ones() -> None:
    assert gpu_pool({"WSSS_GPU_IDS": "0, 2,3", "CUDA_VISIBLE_DEVICES": "1"}) == ["0", "2", "3"]
    assert gpu_pool({"CUDA_VISIBLE_DEVICES": "GPU-a1,GPU-b2"}) == ["GPU-a1", "GPU-b2"]
    assert gpu_pool({"CUDA_VISIBLE_DEVICES": ""}) == []


def test_claims_are_disjoint_and_more_gpus_than_the_machine_has_is_an_error(tmp_path: Path) -> None:
    first = try_claim(2, IDS, tmp_path)
    second = try_claim(2, IDS, tmp_path)
    assert first and second and set(first.ids) | set(second.ids) == set(IDS)
    assert try_claim(1, IDS, tmp_path) is None  # all held: nothing claimed, nothing kept
    first.release()
    third = try_claim(2, IDS, tmp_path)
    assert third and set(third.ids) == set(first.ids)
    second.release()
    third.release()
    with pytest.raises(GpuError, match=r"5 GPU\(s\) asked for but this machine offers 4 \(0,1,2,3\)"):
        claim_gpus(5, IDS, tmp_path)


def test_zero_gpus_runs_the_command_itself_with_no_claim(tmp_path: Path) -> None:
    env = launcher_env(tmp_path)
    script = 'echo "$$ ${CUDA_VISIBLE_DEVICES-unset}"; exit 7'
    proc = launcher(0, ["sh", "-c", script], env, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 7
    assert out.split() == [str(proc.pid), "unset"]  # exec: the command is the launcher's process, GPUs untouched
    assert not (tmp_path / "locks").exists()


def test_under_slurm_the_scheduler_s_gpus_are_kept(tmp_path: Path) -> None:
    env = launcher_env(tmp_path, SLURM_JOB_ID="123", CUDA_VISIBLE_DEVICES="5")
    proc = launcher(1, ["sh", "-c", 'echo "$$ $CUDA_VISIBLE_DEVICES"'], env, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.split() == [str(proc.pid), "5"]
    assert not (tmp_path / "locks").exists()


def test_two_launchers_of_two_gpus_get_disjoint_gpus_under_torchrun(tmp_path: Path) -> None:
    env = launcher_env(tmp_path)
    outs = [tmp_path / "a", tmp_path / "b"]
    procs = []
    for out in outs:
        out.mkdir()
        procs.append(launcher(2, [sys.executable, "-c", RANK, str(out)], env, stderr=subprocess.DEVNULL))
    try:
        wait_for(lambda: all((out / f"rank{rank}").exists() for out in outs for rank in (0, 1)))
    finally:
        (tmp_path / "release").touch()
        statuses = [proc.wait(timeout=60) for proc in procs]
    assert statuses == [0, 0]
    seen = []
    for out in outs:
        ranks = [(out / f"rank{rank}").read_text().split() for rank in (0, 1)]
        assert ranks[0][0] == ranks[1][0] and ranks[0][1] == ranks[1][1] == "2"  # one claim, world of two
        seen.append(set(ranks[0][0].split(",")))
    assert all(len(ids) == 2 for ids in seen) and not seen[0] & seen[1] and seen[0] | seen[1] == set(IDS)


def test_a_launcher_waits_while_the_gpus_are_held(tmp_path: Path) -> None:
    env = launcher_env(tmp_path)
    (tmp_path / "locks").mkdir()
    held = try_claim(4, IDS, tmp_path / "locks")
    assert held
    out = tmp_path / "out"
    out.mkdir()
    log = tmp_path / "launcher.log"
    with log.open("w") as stderr:
        proc = launcher(1, [sys.executable, "-c", RANK, str(out)], env, stderr=stderr)
        try:
            wait_for(lambda: "waiting for 1 free GPU(s) of 0,1,2,3" in log.read_text(), timeout=30)
            assert not (out / "rank0").exists()  # not started on a GPU another job holds
            held.release()
            wait_for(lambda: (out / "rank0").exists(), timeout=30)
        finally:
            held.release()
            (tmp_path / "release").touch()
            assert proc.wait(timeout=60) == 0
    assert (out / "rank0").read_text().split()[0] in IDS


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_to_the_launcher_reaches_the_command_and_its_status_comes_back(
        tmp_path: Path, signum: signal.Signals) -> None:
    env = launcher_env(tmp_path)
    proc = launcher(1, [sys.executable, "-c", STOPPABLE, str(tmp_path), "usr1"], env)
    wait_for(lambda: (tmp_path / "ready0").exists() and (tmp_path / "ready0").read_text())
    # the command has a process group of its own: a signal to the launcher's group reaches it through the launcher
    # alone, not twice
    assert int((tmp_path / "ready0").read_text()) != proc.pid
    os.killpg(proc.pid, signum)  # the launcher's whole process group, as a job scheduler or a terminal would
    assert proc.wait(timeout=60) == 75
    assert (tmp_path / "signals0").read_text().split() == [str(int(signum))]


def test_a_killed_command_s_status_is_128_plus_its_signal(tmp_path: Path) -> None:
    env = launcher_env(tmp_path)
    proc = launcher(1, ["sh", "-c", "kill -KILL $$"], env)
    assert proc.wait(timeout=60) == 128 + signal.SIGKILL


def test_sigusr1_reaches_torchrun_s_ranks_as_sigterm(tmp_path: Path) -> None:
    env = launcher_env(tmp_path)
    proc = launcher(2, [sys.executable, "-c", STOPPABLE, str(tmp_path), "term-only"], env, stderr=subprocess.DEVNULL)
    wait_for(lambda: (tmp_path / "ready0").exists() and (tmp_path / "ready1").exists())
    os.kill(proc.pid, signal.SIGUSR1)  # torchrun itself would die of it and leave its ranks unwarned
    assert proc.wait(timeout=120) != 0  # torchrun exits 1 after SIGTERM whatever its ranks returned
    for rank in (0, 1):
        assert (tmp_path / f"signals{rank}").read_text().split() == [str(int(signal.SIGTERM))]


def test_a_single_gpu_job_refuses_more_than_one_gpu(tmp_path: Path) -> None:
    env = launcher_env(tmp_path)
    proc = launcher(2, ["sh", "-c", f"touch {tmp_path / 'ran'}"], env, "--single-gpu-job", "proxy_labels",
                    "--advice", PROXY_ADVICE, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and not (tmp_path / "ran").exists()
    assert err.strip().splitlines() == [f"python -m pipeline.launch: error: proxy_labels runs one GPU per job, "
                                        f"not 2; {PROXY_ADVICE}"]


def snakemake(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "snakemake"), "--directory", str(REPO), *args], capture_output=True, text=True,
                          cwd=REPO)


def planned(output: str) -> dict[str, list[tuple[str, str]]]:
    """Rule name -> (resources line, shell command) of each job a dry run with --printshellcmds plans."""
    jobs: dict[str, list[tuple[str, str]]] = {}
    name, resources = None, ""
    for line in output.splitlines():
        if line.startswith(("rule ", "localrule ")):
            name, resources = line.split()[1].rstrip(":"), ""
            jobs.setdefault(name, [])
        elif name and line.strip().startswith("resources:"):
            resources = line.strip()
            if "gpu=" not in resources:
                jobs[name].append((resources, ""))
        elif name and "python -m pipeline.launch" in line:
            jobs[name].append((resources, line[line.index("python -m pipeline.launch") - len("exec "):]))
    return jobs


TRAINING = ("train_s4net", "train_cam", "train_segmenter", "experiment_train", "experiment_peer_train")
SINGLE = ("evaluate_s4net", "instance_classifier", "proxy_labels", "evaluate_segmenter", "experiment_evaluate",
          "experiment_peer_evaluate", "experiment_gradients")


@pytest.mark.parametrize("gpus", [0, 2])
def test_trainers_ask_for_the_config_s_gpus_other_networks_for_at_most_one(tmp_path: Path, gpus: int) -> None:
    result = snakemake("all", "experiments", "--dry-run", "--printshellcmds", "--cores", "1", "--configfile",
                       str(DEMO), "--config", f"results={tmp_path / 'out'}", f"gpus={gpus}")
    assert result.returncode == 0, result.stderr
    jobs = planned(result.stdout + result.stderr)
    for rule in TRAINING + SINGLE:
        wanted = gpus if rule in TRAINING else min(gpus, 1)
        assert jobs[rule], rule
        for resources, command in jobs[rule]:
            assert f"gpu={wanted}," in resources, (rule, resources)
            single = f" --single-gpu-job {rule} " in command
            # exec: no shell between the job and the command, to die of a SIGTERM meant for the command
            assert command.startswith(f"exec python -m pipeline.launch --gpus {wanted} ") and single == (rule in SINGLE)
    for rule in ("score_proxy_labels", "report", "experiment_table", "demo_data"):
        assert all("gpu" not in resources and not command for resources, command in jobs[rule]), rule


def test_a_profile_giving_proxy_labels_two_gpus_is_refused_naming_wsss_shards(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = snakemake("--dry-run", "--printshellcmds", "--cores", "1", "--configfile", str(DEMO), "--config",
                       f"results={out}", "gpus=2", "--set-resources", "proxy_labels:gpu=2")
    assert result.returncode == 0, result.stderr
    command = planned(result.stdout + result.stderr)["proxy_labels"][0][1]
    assert "--gpus 2 --single-gpu-job proxy_labels" in command
    (out / "logs").mkdir(parents=True)
    run = subprocess.run(["bash", "-c", command], env=launcher_env(tmp_path), cwd=REPO, timeout=60)
    assert run.returncode == 2
    log = next((out / "logs").glob("proxy_labels_*.log")).read_text()
    assert log.strip().splitlines() == [f"python -m pipeline.launch: error: proxy_labels runs one GPU per job, not 2; "
                                        f"{PROXY_ADVICE}"]


def test_the_local_profile_caps_a_job_s_gpus_at_the_declared_count(tmp_path: Path) -> None:
    result = snakemake("--profile", str(REPO / "workflows" / "profiles" / "local"), "--dry-run", "--printshellcmds",
                       "--configfile", str(DEMO), "--config", f"results={tmp_path / 'out'}", "gpus=4",
                       "--resources", "gpu=2")
    assert result.returncode == 0, result.stderr
    resources, command = planned(result.stdout + result.stderr)["train_s4net"][0]
    assert "gpu=2," in resources and command.startswith("exec python -m pipeline.launch --gpus 2 -- s4net train ")
