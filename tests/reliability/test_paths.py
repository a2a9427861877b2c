"""Paths: lists cannot reach outside their root; the workflow quotes every path it puts in a shell command."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_workflow_shell_commands_survive_spaces_and_quotes_in_paths(tmp_path: Path) -> None:
    """Every planned command, split the way the shell will split it, hands each path over whole."""
    results = tmp_path / "my results" / "it's a \"quoted\" $HOME dir"
    result = subprocess.run(
        [str(BIN / "snakemake"), "--directory", str(REPO), "--dry-run", "--printshellcmds", "--cores", "2",
         "--configfile", str(REPO / "workflows" / "configs" / "demo.yaml"), "--config", f"results={results}"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    commands = [match.group(1) for line in (result.stdout + result.stderr).splitlines()
                if (match := re.match(r"\s*Shell command: (.*)$", line)) and match.group(1) != "None"]
    assert len(commands) >= 15, commands
    for command in commands:
        words = shlex.split(command)  # what bash hands the program, $HOME left unexpanded inside quotes
        with_results = [w for w in words if "my results" in w]
        assert with_results, command
        for word in with_results:
            if word.startswith("{"):  # the provenance rule's settings, as JSON
                assert json.loads(word)["results"] == str(results)
            else:
                path = word.split("=", 1)[1] if "=" in word else word  # NAME=PATH arguments of wsss report
                assert path.startswith(str(results)), (word, command)


@pytest.mark.parametrize("entry", ["../outside.JPEG", "/etc/passwd", "train/../../outside.JPEG"])
def test_keyword_tables_cannot_name_images_outside_their_root(tmp_path: Path, entry: str) -> None:
    from pipeline.datasets.imagenet import ImageNetSubset
    from s4net.errors import InputError

    root = tmp_path / "root"
    (root / "train").mkdir(parents=True)
    (tmp_path / "outside.JPEG").write_bytes(b"x")
    (tmp_path / "keywords.csv").write_text(f"image,keywords\n{entry},dog\n")
    with pytest.raises(InputError, match="outside|climb|absolute"):
        subset = ImageNetSubset(root, tmp_path / "keywords.csv")
        subset.image_path(0)


@pytest.mark.parametrize("entry", ["../outside", "/etc/passwd"])
def test_segmenter_id_lists_cannot_name_labels_outside_their_root(tmp_path: Path, entry: str) -> None:
    from pipeline.segmenter.data import find_pairs
    from s4net.errors import InputError

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "ids.txt").write_text(f"{entry}\n")
    with pytest.raises(InputError):
        find_pairs(tmp_path / "images", tmp_path / "labels", tmp_path / "ids.txt")
