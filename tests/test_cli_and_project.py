"""Console scripts, packaging, the workflow entry and the CI guard against empty suites."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(("script", "commands"), [("s4net", ["convert-masks"]), ("wsss", ["demo-data", "keywords"])])
def test_console_scripts_list_their_subcommands(script: str, commands: list[str]) -> None:
    result = subprocess.run([str(BIN / script), "--help"], capture_output=True, text=True, check=True)
    for command in commands:
        assert command in result.stdout
    result = subprocess.run([str(BIN / script)], capture_output=True, text=True)
    assert result.returncode == 2 and "required: COMMAND" in result.stderr


def test_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "s4net"), "convert-masks", "--images", str(tmp_path / "no"), "--instance-masks", str(tmp_path),
         "--out", str(tmp_path / "o.json")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"s4net convert-masks: error: {tmp_path / 'no'}: not a directory"


def test_pyproject_declares_dependencies_and_scripts() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {dep.split(">")[0].split("=")[0].split("<")[0].strip() for dep in project["dependencies"]}
    assert {"torch", "torchvision", "segmentation-models-pytorch", "numpy", "pillow", "pycocotools", "pydensecrf2",
            "snakemake", "tqdm", "pyyaml"} <= names
    assert "pydensecrf" not in names
    dev = {dep.split(">")[0] for dep in project["optional-dependencies"]["dev"]}
    assert {"pytest", "hypothesis"} <= dev
    assert project["scripts"] == {"s4net": "s4net.cli:main", "wsss": "pipeline.cli:main"}
    assert "torch==2.14.1 torchvision==0.29.1" in (REPO / "Makefile").read_text()


def test_environment_yml_matches_the_venv_recipe() -> None:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    assert {"torch==2.14.1", "torchvision==0.29.1", "-e .[dev]"} <= set(pip)


def test_s4net_library_does_not_import_the_pipeline() -> None:
    for path in (REPO / "s4net").rglob("*.py"):
        text = path.read_text()
        assert "import pipeline" not in text and "from pipeline" not in text, path


def test_snakefile_plans_the_demo(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "snakemake"), "--dry-run", "--cores", "1", "--directory", str(REPO),
         "--configfile", str(REPO / "workflows" / "configs" / "demo.yaml"),
         "--config", f"results={tmp_path / 'out'}"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    planned = result.stdout + result.stderr
    for rule in ("demo_data", "train_s4net", "instance_classifier", "proxy_labels", "gather_proxy_labels", "train_segmenter", "evaluate_segmenter"):
        assert rule in planned, rule


def test_slurm_profile_plans_the_dag_with_the_declared_resources(tmp_path: Path) -> None:
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="the slurm extra is not installed")
    result = subprocess.run(
        [str(BIN / "snakemake"), "--profile", str(REPO / "workflows" / "profiles" / "slurm"), "--dry-run",
         "--directory", str(REPO), "--configfile", str(REPO / "workflows" / "configs" / "demo.yaml"),
         "--config", f"results={tmp_path / 'out'}"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    jobs: dict[str, str] = {}  # rule -> its planned resources line
    name = None
    for line in (result.stdout + result.stderr).splitlines():
        if line.startswith(("rule ", "localrule ")):
            name = line.split()[1].rstrip(":")
        elif name and line.strip().startswith("resources:"):
            jobs[name] = line
    assert "gpu=1" in jobs["train_s4net"] and "slurm_partition=CHANGE_ME_gpu_partition" in jobs["train_s4net"]
    assert "mem_mb=6000" in jobs["train_segmenter"] and "runtime=120" in jobs["train_segmenter"]
    assert "slurm_account=CHANGE_ME_account" in jobs["evaluate_s4net"] and "gpu" not in jobs["evaluate_s4net"]


@pytest.mark.parametrize("bad, message", [
    ("colour: red\n", "'colour' was unexpected"),
    ("wsss:\n  shards: two\n", "'two' is not of type 'integer'"),
    ("wsss:\n  cues: [instances, clip]\n", "'clip' is not one of"),
    ("s4net:\n  size: 100\n", "100 is not a multiple of 32"),
])
def test_config_schema_rejects_bad_configs_before_any_job(tmp_path: Path, bad: str, message: str) -> None:
    (tmp_path / "bad.yaml").write_text(bad)
    result = subprocess.run(
        [str(BIN / "snakemake"), "--dry-run", "--cores", "1", "--directory", str(REPO),
         "--configfile", str(REPO / "workflows" / "configs" / "demo.yaml"), str(tmp_path / "bad.yaml"),
         "--config", f"results={tmp_path / 'out'}"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_ci_run_fails_when_no_test_is_collected(tmp_path: Path) -> None:
    """A copy of the project with its tests deleted must fail `.ci/run`, loudly."""
    copy = tmp_path / "proj"
    (copy / ".ci").mkdir(parents=True)
    (copy / "tests").mkdir()
    for name in ("Makefile", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, copy / name)
    shutil.copy2(REPO / ".ci" / "run", copy / ".ci" / "run")
    venv = Path(sys.prefix)
    (copy / ".venv").symlink_to(venv)
    if not (venv / ".installed").exists():
        pytest.skip("running outside the Makefile's .venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["MAKEFLAGS"] = "-o .venv/.installed"  # never reinstall the shared venv from the copy
    result = subprocess.run(["bash", ".ci/run"], cwd=copy, capture_output=True, text=True, env=env)
    assert result.returncode != 0
    assert "collected no tests" in result.stderr


def test_world_benchmark_prints_json(tmp_path: Path) -> None:
    import json

    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, str(REPO / "bench" / "bench_world.py"), "--scale", "tiny", "--repeats", "1",
                    "--out", str(out)], capture_output=True, text=True, check=True)
    result = json.loads(out.read_text())
    assert result["images"] == 40 + 40 + 32 and result["speedup_vs_workers_1"] > 0
