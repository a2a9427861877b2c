"""``wsss`` commands take ``--device auto`` (CUDA when available) and default to it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.cli import build_parser
from pipeline.cli import main as wsss_main


def test_every_wsss_device_option_defaults_to_auto() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    defaults = {name: action.default for name, sub in commands.choices.items() for action in sub._actions
                if action.dest == "device"}
    assert len(defaults) >= 5 and set(defaults.values()) == {"auto"}, defaults


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal of CUDA where there is none")
def test_a_cuda_device_without_cuda_is_a_one_line_input_error(checkpoint: Path, tiny_world: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    imagenet = tiny_world / "imagenet"
    code = wsss_main(["proxy-labels", "--checkpoint", str(checkpoint), "--images", str(imagenet), "--out",
                      str(tmp_path / "out"), "--device", "cuda", "-q"])
    assert code == 2 and "--device cuda" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
