"""Console scripts, packaging and the CI guard against empty suites (the workflow: test_workflow.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
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
    # never reinstall the shared venv from the copy (it holds no packages: an editable install of it would
    # unmap s4net and pipeline): its pyproject.toml is made older than the venv's stamp
    os.utime(copy / "pyproject.toml", (0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    result = subprocess.run(["bash", ".ci/run"], cwd=copy, capture_output=True, text=True, env=env)
    assert result.returncode != 0
    assert "collected no tests" in result.stderr


def test_world_benchmark_prints_json(tmp_path: Path) -> None:
    import json

    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, "-m", "bench.bench_world", "--scale", "tiny", "--repeats", "1",
                    "--out", str(out)], capture_output=True, text=True, check=True, cwd=REPO)
    result = json.loads(out.read_text())
    assert result["images"] == 40 + 40 + 32 and result["speedup_vs_workers_1"] > 0
