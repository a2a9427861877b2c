"""The engine's parts that make N processes one run, checked in one process (torchrun: test_distributed_training)."""

from __future__ import annotations

import pytest
import torch

from s4net.engine import Precision, resolve_precision
from s4net.engine.distributed import RankShare, World, global_mean
from s4net.engine.sample_dropout import SampleDropout, per_sample_dropout
from s4net.engine.sync_batchnorm import GlobalBatchNorm2d, convert_batchnorm
from s4net.errors import InputError


def test_each_rank_takes_its_contiguous_share_of_every_global_batch() -> None:
    batches = [list(range(i * 4, i * 4 + 4)) for i in range(3)]
    shares = [list(RankShare(batches, World(rank, 2), 4)) for rank in (0, 1)]
    assert shares[0] == [[0, 1], [4, 5], [8, 9]] and shares[1] == [[2, 3], [6, 7], [10, 11]]
    assert [a + b for a, b in zip(*shares, strict=True)] == batches  # together: the one-process batches
    with pytest.raises(InputError, match="batch size 6 does not divide over 4 processes"):
        World(0, 4).local_batch(6)


def test_global_mean_in_one_process_is_the_mean_and_zero_for_an_empty_set() -> None:
    total = torch.tensor(6.0, requires_grad=True)
    assert global_mean(total, torch.tensor(4)).item() == 1.5
    assert global_mean(torch.tensor(0.0), torch.tensor(0)).item() == 0.0


def test_precision_follows_the_device_and_the_flags() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision(cpu, amp=True, cpu_bf16=False) == Precision(None, False)
    assert resolve_precision(cpu, amp=True, cpu_bf16=True) == Precision(torch.bfloat16, False)
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        assert resolve_precision(cuda, amp=False, cpu_bf16=True) == Precision(None, False)
        bf16 = torch.cuda.is_bf16_supported()
        expected = Precision(torch.bfloat16, False) if bf16 else Precision(torch.float16, True)
        assert resolve_precision(cuda, amp=True, cpu_bf16=False) == expected


def test_sample_dropout_draws_the_same_masks_however_the_batch_is_split() -> None:
    layer = SampleDropout(0.5).train()
    x = torch.ones(4, 8, 3, 3)
    layer.draw_for(7, (10, 11, 12, 13))
    whole = layer(x)
    parts = []
    for samples in ((10, 11), (12, 13)):
        layer.draw_for(7, samples)
        parts.append(layer(x[:2]))
    assert torch.equal(whole, torch.cat(parts))
    assert 0.3 < (whole == 0).float().mean() < 0.7 and set(whole.unique().tolist()) <= {0.0, 2.0}
    layer.draw_for(8, (10, 11, 12, 13))
    assert not torch.equal(layer(x), whole)  # the seed reaches the masks
    layer.eval()
    assert torch.equal(layer(x), x)


def test_per_sample_dropout_replaces_every_dropout_and_keeps_the_rest() -> None:
    nested = torch.nn.Sequential(torch.nn.Dropout(0.1))
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.2), nested)
    replaced = per_sample_dropout(model)
    assert [d.p for d in replaced] == [0.2, 0.1] and [d.layer for d in replaced] == [0, 1]
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())


def test_global_batchnorm_is_batchnorm_in_one_process_with_the_same_state() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    reference = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    reference.load_state_dict(model.state_dict())
    convert_batchnorm(model)
    assert isinstance(model[1], GlobalBatchNorm2d) and model.state_dict().keys() == reference.state_dict().keys()
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(model(x), reference(x), atol=1e-6)
    assert torch.allclose(model[1].running_var, reference[1].running_var)


def test_the_peer_sampler_draws_each_image_from_its_own_position() -> None:
    from s4net.reproduction.maskrcnn_peer import SeededBalancedSampler

    torch.manual_seed(0)
    labels = [torch.randint(-1, 3, (300,)) for _ in range(4)]
    sampler = SeededBalancedSampler(64, 0.25, stage=1)
    sampler.draw_for(3, (20, 21, 22, 23))
    together = sampler(labels)
    assert sampler.picked == sum(int(p.sum() + n.sum()) for p, n in zip(*together, strict=True))
    halves = []
    for part in ((0, 1), (2, 3)):
        sampler.draw_for(3, tuple(20 + i for i in part))
        halves.append(sampler([labels[i] for i in part]))
    for which in (0, 1):  # positives, negatives
        split = halves[0][which] + halves[1][which]
        assert all(torch.equal(a, b) for a, b in zip(together[which], split, strict=True))
    positives, negatives = together
    assert all(int(p.sum()) <= 16 and int(p.sum() + n.sum()) == 64 for p, n in zip(positives, negatives, strict=True))
    assert all(bool((lab[p.bool()] >= 1).all()) and bool((lab[n.bool()] == 0).all())
               for lab, p, n in zip(labels, positives, negatives, strict=True))


def test_a_diverging_training_exits_3_with_one_line(tiny_world, tmp_path, monkeypatch, capsys) -> None:
    """The CLIs map the engine's TrainingDiverged to status 3 and one line naming the iteration and the loss."""
    from pipeline.cli import main
    from pipeline.cues.cam import CamTask

    real = CamTask.losses

    def poisoned(self, model, batch, step):
        return {name: value * float("nan") for name, value in real(self, model, batch, step).items()}

    monkeypatch.setattr(CamTask, "losses", poisoned)
    status = main(["train-cam", "--images", str(tiny_world / "imagenet"), "--out", str(tmp_path), "--size", "32",
                   "--iterations", "2", "--batch-size", "2", "--device", "cpu", "-q"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 3 and len(lines) == 1, lines
    expected = "wsss train-cam: error: train CAM classifier: loss is not finite at iteration 0 (loss=nan)"
    assert lines[0].startswith(expected)
