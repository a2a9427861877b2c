"""The Python side of ``bench/gpu_check.sh``: the environment report, a preempted run, and ``summary.json``.

Subcommands (the script calls them as ``python -m bench.gpu_check_helper ...``; each is usable alone):

* ``env --device D --out FILE``: versions of Python, torch, torchvision, CUDA, cuDNN, the GPU
  and its driver (``nvidia-smi``), this project, and every package the script needs or the
  project can use; exits 1 when a package the script needs is missing, or CUDA was asked for
  and torch sees none.
* ``preempt --watch FILE -- CMD...``: run a training command, send it SIGTERM once ``FILE``
  (its ``checkpoints/last.pt``) exists, and exit 0 only if it then stopped as a preempted
  run does (status 75, a checkpoint written): the first half of a real preemption and resume.
* ``record --name N --status S ...``: add a step, with the parsed results of its bench or CLI,
  to ``steps.jsonl`` and rewrite ``summary.json`` (atomically, after every step, so a script
  killed half-way still leaves what it measured); ``summary --finished``: the final rewrite.

Only the ``env`` subcommand imports torch.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from s4net.io.atomic import atomic_write_text, write_json

REPO = Path(__file__).resolve().parents[1]

# distribution name -> import name of every package the script's steps import (torch's own stack included)
NEEDED = {
    "torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "pillow": "PIL", "scipy": "scipy",
    "pyyaml": "yaml", "tqdm": "tqdm", "segmentation-models-pytorch": "segmentation_models_pytorch",
    "timm": "timm", "huggingface-hub": "huggingface_hub", "safetensors": "safetensors",
    "pycocotools": "pycocotools", "pydensecrf2": "pydensecrf", "pytest": "pytest",
}
# what the project can use but no step of the script imports (the workflow, reports, property tests, SLURM)
OPTIONAL = {
    "snakemake": "snakemake", "matplotlib": "matplotlib", "hypothesis": "hypothesis", "ruff": "ruff",
    "snakemake-executor-plugin-slurm": "snakemake_executor_plugin_slurm",
}
EXIT_PREEMPTED = 75  # s4net.engine.EXIT_PREEMPTED, without importing torch here
TIMEOUT_STATUSES = (124, 137)  # GNU timeout: the limit was reached (137: it had to send SIGKILL)


# ---------------------------------------------------------------------------------------------------- env
def package_versions(packages: dict[str, str]) -> dict[str, str | None]:
    """Installed version of each distribution (None: not importable), without importing any of them."""
    found: dict[str, str | None] = {}
    for dist, module in packages.items():
        if importlib.util.find_spec(module) is None:
            found[dist] = None
            continue
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = "importable (no metadata)"
    return found


def _command_output(command: list[str], timeout: float = 20) -> str | None:
    """Stripped stdout of ``command``, or None when it is missing or fails."""
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def environment(device: str) -> dict[str, Any]:
    """What the run ran on: interpreter, torch and its CUDA stack, the GPU and driver, packages, this code."""
    import torch
    import torchvision

    import pipeline
    import s4net

    cuda = torch.cuda.is_available()
    gpus = []
    for index in range(torch.cuda.device_count() if cuda else 0):
        props = torch.cuda.get_device_properties(index)
        gpus.append({"name": props.name, "capability": f"{props.major}.{props.minor}",
                     "memory_gib": round(props.total_memory / 2**30, 1),
                     "multiprocessors": props.multi_processor_count})
    try:
        cpu_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        cpu_bf16 = False
    smi = _command_output(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    needed, optional = package_versions(NEEDED), package_versions(OPTIONAL)
    return {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device_asked": device,
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": cuda,
        "gpus": gpus,
        "cuda_bf16_supported": bool(cuda and torch.cuda.is_bf16_supported()),
        "cpu_bf16_supported": cpu_bf16,
        "nvidia_smi": smi.splitlines() if smi else None,
        "s4net": s4net.__version__,
        "pipeline": pipeline.__version__,
        "git_commit": _command_output(["git", "rev-parse", "HEAD"]),
        "git_dirty": bool(_command_output(["git", "status", "--porcelain", "--untracked-files=no"])),
        "packages": needed,
        "optional_packages": optional,
        "missing": sorted(name for name, version in needed.items() if version is None),
        "missing_optional": sorted(name for name, version in optional.items() if version is None),
    }


def run_env(args: argparse.Namespace) -> int:
    report = environment(args.device)
    write_json(args.out, report, indent=2)
    problems = [f"missing packages: {', '.join(report['missing'])}"] if report["missing"] else []
    if args.device.startswith("cuda") and not report["cuda_available"]:
        problems.append(f"--device {args.device} asked for but torch {report['torch']} sees no CUDA device")
    print(json.dumps(report, indent=2))
    for problem in problems:
        print(f"gpu_check env: {problem}", file=sys.stderr)
    return 1 if problems else 0


# ---------------------------------------------------------------------------------------------------- preempt
def run_preempt(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("gpu_check preempt: no command given", file=sys.stderr)
        return 2
    watch = Path(args.watch)
    process = subprocess.Popen(command)
    signalled = False
    while process.poll() is None:
        if not signalled and watch.exists():
            process.send_signal(signal.SIGTERM)
            signalled = True
        time.sleep(args.poll)
    status = process.returncode
    if not signalled:
        print(f"gpu_check preempt: the run ended (status {status}) before {watch} appeared; nothing was preempted",
              file=sys.stderr)
        return 1
    if status != EXIT_PREEMPTED:
        print(f"gpu_check preempt: SIGTERM gave exit status {status}, not {EXIT_PREEMPTED} (preempted)",
              file=sys.stderr)
        return 1
    print(f"gpu_check preempt: stopped by SIGTERM with status {status}; {watch} holds the state to resume from")
    return 0


# ---------------------------------------------------------------------------------------------------- summary
def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def junit_counts(path: Path) -> dict[str, Any]:
    """Tests, passed, failed, errors and skipped of a pytest ``--junitxml`` report, with skip reasons."""
    root = ET.parse(path).getroot()
    cases = root.iter("testcase")
    counts = {"tests": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    reasons: dict[str, int] = {}
    failures = []
    for case in cases:
        counts["tests"] += 1
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("skipped") is not None:
            counts["skipped"] += 1
            reason = case.find("skipped").get("message", "")
            reasons[reason] = reasons.get(reason, 0) + 1
        elif case.find("failure") is not None:
            counts["failed"] += 1
            failures.append(name)
        elif case.find("error") is not None:
            counts["errors"] += 1
            failures.append(name)
        else:
            counts["passed"] += 1
    return {**counts, "skip_reasons": reasons, "failing": failures}


def training_run(folder: Path) -> dict[str, Any]:
    """A training folder as the engine leaves it: precision, last metrics line, checkpoint and final file."""
    result: dict[str, Any] = {}
    config = folder / "train_config.json"
    if config.is_file():
        settings = _read_json(config)
        result["precision"] = settings.get("precision")
        result["device"] = settings.get("device")
        result["iterations"] = settings.get("iterations")
    metrics = folder / "metrics.jsonl"
    lines = metrics.read_text(encoding="utf-8").splitlines() if metrics.is_file() else []
    result["metrics_lines"] = len(lines)
    result["last_metrics"] = json.loads(lines[-1]) if lines else None
    result["last_checkpoint"] = (folder / "checkpoints" / "last.pt").is_file()
    result["final"] = sorted(p.name for p in folder.glob("*.pt"))
    return result


def proxy_run(folder: Path) -> dict[str, Any]:
    """A proxy-label folder: its ``summary.json`` as the run wrote it, the manifest's lines, the label PNGs, and
    the mean number of instances per image kept by the cue."""
    manifest = folder / "manifest.jsonl"
    entries = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if manifest.is_file() else []
    kept = [sum(1 for i in e["instances"] if isinstance(i, dict) and i.get("status") == "kept")
            for e in entries if isinstance(e.get("instances"), list)]
    summary = folder / "summary.json"
    return {"summary": _read_json(summary) if summary.is_file() else None, "manifest_entries": len(entries),
            "label_pngs": sum(1 for _ in (folder / "labels").rglob("*.png")),
            "mean_kept_instances": round(sum(kept) / len(kept), 2) if kept else None}


PARSERS = {"json": _read_json, "junit": junit_counts, "train": training_run, "proxy": proxy_run}


def parse_results(spec: str) -> tuple[Any, str | None]:
    """``kind:path`` -> (parsed results, None), or (None, why not); ``-`` or empty: (None, None)."""
    if not spec or spec == "-":
        return None, None
    kind, _, path = spec.partition(":")
    if kind not in PARSERS:
        return None, f"unknown results kind {kind!r}"
    target = Path(path)
    if not target.exists():
        return None, f"{target} was not written"
    try:
        return PARSERS[kind](target), None
    except (OSError, ValueError, KeyError, ET.ParseError) as exc:
        return None, f"{target}: {exc}"


def row_errors(results: Any) -> list[str]:
    """The errors a bench recorded in its rows while going on with the next (``bench/speed.py`` does so)."""
    rows = results.get("runs") if isinstance(results, dict) else None
    if not isinstance(rows, list):
        return []
    return [f"{row.get('model', '?')} (batch {row.get('batch', '-')}, {row.get('precision', '-')}): {row[key]}"
            for row in rows if isinstance(row, dict) for key in ("error", "stages_error") if key in row]


def step_status(exit_status: int | None, seconds: float, limit: float, results: Any) -> str:
    """``passed``, ``failed`` (also: exit 0 with failed bench rows), ``timed_out``, ``not_run`` (no time left), or
    ``skipped`` (every test skipped)."""
    if exit_status is None:
        return "not_run"
    if exit_status in TIMEOUT_STATUSES and seconds >= limit - 1:
        return "timed_out"
    if exit_status != 0 or row_errors(results):
        return "failed"
    if isinstance(results, dict) and "skip_reasons" in results and results["tests"] == results["skipped"]:
        return "skipped"
    return "passed"


def step_entry(name: str, status: str, seconds: float, limit: float, spec: str, command: str) -> dict[str, Any]:
    """One step of ``summary.json``, its results parsed now (a later step may change the files they come from)."""
    exit_status = None if status == "-" else int(status)
    results, problem = parse_results(spec)
    entry: dict[str, Any] = {
        "name": name, "command": command.strip(), "exit_status": exit_status, "seconds": round(seconds, 1),
        "timeout_s": int(limit), "status": step_status(exit_status, seconds, limit, results), "results": results,
    }
    if problem:
        entry["results_problem"] = problem
    if row_errors(results):
        entry["row_errors"] = row_errors(results)
    return entry


def read_steps(path: Path) -> list[dict[str, Any]]:
    """The steps recorded so far (``steps.jsonl``, one entry a line)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def comparisons(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The same S4Net checkpoint evaluated on the device and on the CPU: the difference of each metric."""
    by_name = {step["name"]: step.get("results") for step in steps}
    device, cpu = by_name.get("s4net_evaluate_device"), by_name.get("s4net_evaluate_cpu")
    if not isinstance(device, dict) or not isinstance(cpu, dict):
        return {}
    keys = ("mAP50", "mAP70", "mAP50_occluded", "mAP70_occluded")
    return {"s4net_evaluate_device_minus_cpu": {k: device[k] - cpu[k] for k in keys if k in device and k in cpu}}


def write_summary(args: argparse.Namespace, steps: list[dict[str, Any]], finished: bool) -> None:
    """``summary.json`` from ``steps``; ``ok`` once finished with every step passed (the cuda tests may only
    skip where no GPU was asked for)."""
    not_ok = [s["name"] for s in steps if s["status"] != "passed"
              and not (s["status"] == "skipped" and s["name"] == "cuda_tests" and args.device == "cpu")]
    write_json(args.out, {
        "script": "bench/gpu_check.sh",
        "device": args.device,
        "size": args.size,
        "started": args.started,
        "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "budget_s": args.budget,
        "seconds": round(sum(s["seconds"] for s in steps), 1),
        "log": args.log,
        "finished": finished,
        "ok": finished and not not_ok,
        "not_ok": not_ok,
        "steps": steps,
        **comparisons(steps),
    }, indent=2)


def run_record(args: argparse.Namespace) -> int:
    steps = read_steps(args.steps)
    steps.append(step_entry(args.name, args.status, args.seconds, args.limit, args.results, args.step_command))
    atomic_write_text(args.steps, "".join(json.dumps(s) + "\n" for s in steps))
    write_summary(args, steps, finished=False)
    return 0


def run_summary(args: argparse.Namespace) -> int:
    write_summary(args, read_steps(args.steps), finished=args.finished)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command_name", required=True)
    env = commands.add_parser("env", help="versions and packages as JSON")
    env.add_argument("--device", default="cuda")
    env.add_argument("--out", type=Path, required=True)
    env.set_defaults(run=run_env)
    preempt = commands.add_parser("preempt", help="run a training command and SIGTERM it once --watch exists")
    preempt.add_argument("--watch", required=True, help="the file whose appearance triggers SIGTERM")
    preempt.add_argument("--poll", type=float, default=0.05, help="seconds between looks")
    preempt.add_argument("command", nargs=argparse.REMAINDER)
    preempt.set_defaults(run=run_preempt)
    for name, run, text in (("record", run_record, "add one step's entry (its results parsed) and rewrite "
                                                   "summary.json"),
                            ("summary", run_summary, "rewrite summary.json from the recorded steps")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--steps", type=Path, required=True, help="steps.jsonl, one recorded step a line")
        sub.add_argument("--out", type=Path, required=True, help="summary.json")
        sub.add_argument("--device", required=True)
        sub.add_argument("--size", required=True)
        sub.add_argument("--budget", type=int, required=True)
        sub.add_argument("--started", required=True)
        sub.add_argument("--log", required=True)
        sub.set_defaults(run=run)
        if name == "summary":
            sub.add_argument("--finished", action="store_true", help="the last step has run")
            continue
        sub.add_argument("--name", required=True)
        sub.add_argument("--status", required=True, help="exit status, or - when the step did not run")
        sub.add_argument("--seconds", type=float, required=True)
        sub.add_argument("--limit", type=float, required=True, help="the step's time limit (s)")
        sub.add_argument("--results", default="-", help="KIND:PATH with KIND one of " + ", ".join(PARSERS))
        sub.add_argument("--command", dest="step_command", required=True, help="the step's command line")
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
