"""`wsss train-segmenter --deterministic`: DeepLab without the ops that have no deterministic CUDA kernel.

On this CPU the ops a forward and backward dispatch are recorded (TorchDispatchMode) and checked against
torch's list of ops that raise under ``torch.use_deterministic_algorithms(True)`` on CUDA; the twins that
replace them are checked equal to the originals; a deterministic run repeats to the same weights. The
``cuda`` test runs the real thing where a GPU is.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from pipeline.classes import IGNORE_INDEX
from pipeline.segmenter.config import ARCHITECTURES, SegmenterConfig
from pipeline.segmenter.train import SegmenterTask, SegTrainConfig
from s4net.engine import Step

TINY = SegmenterConfig(encoder="resnet18")

# The aten ops behind the entries of torch.use_deterministic_algorithms' docs (torch 2.14) that raise on CUDA
# ("The following normally-nondeterministic operations will throw a RuntimeError when mode=True").
NONDETERMINISTIC_ON_CUDA = frozenset({
    "avg_pool3d_backward",
    "_adaptive_avg_pool2d_backward", "adaptive_avg_pool2d_backward",
    "_adaptive_avg_pool3d_backward", "adaptive_avg_pool3d_backward",
    "adaptive_max_pool2d_backward",
    "fractional_max_pool2d_backward", "fractional_max_pool3d_backward",
    "max_unpool2d", "max_unpool3d",
    "upsample_linear1d_backward", "upsample_bilinear2d_backward", "_upsample_bilinear2d_aa_backward",
    "upsample_bicubic2d_backward", "_upsample_bicubic2d_aa_backward", "upsample_trilinear3d_backward",
    "reflection_pad1d_backward", "reflection_pad2d_backward", "reflection_pad3d_backward",
    "nll_loss_forward", "nll_loss2d_forward", "nll_loss2d_backward",  # NLLLoss "when called on a CUDA tensor"
    "_ctc_loss_backward", "_embedding_bag_backward", "_embedding_bag_dense_backward",
    "put_", "put", "histc", "bincount", "median",
    "grid_sampler_2d_backward", "grid_sampler_3d_backward",
})


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: one thread does them in a third of the CPU time two threads spend (and spin) on
    cores shared with other work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class OpRecorder(TorchDispatchMode):
    """The names of the aten ops dispatched inside the block (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def write_pairs(root: Path, count: int = 2, size: tuple[int, int] = (40, 52)) -> tuple[Path, Path]:
    """``count`` random images and labels (0..20, some 255) in the layout find_pairs reads."""
    rng = np.random.default_rng(0)
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(images / f"i{index}.png")
        label = rng.integers(0, 21, size, dtype=np.uint8)
        label[:5] = IGNORE_INDEX
        Image.fromarray(label).save(labels / f"i{index}.png")
    return images, labels


def task_for(tmp_path: Path, arch: str = "deeplabv3plus", **settings) -> SegmenterTask:
    images, labels = write_pairs(tmp_path / "data")
    return SegmenterTask(SegTrainConfig(images=images, labels=labels, out=tmp_path / "out",
                                        model=SegmenterConfig(arch=arch, encoder="resnet18"), batch_size=2, crop=32,
                                        device="cpu", deterministic=True, **settings))


def first_batch(task: SegmenterTask):
    dataset = task.dataset()
    return task.collate([dataset[item] for item in next(iter(task.batches(0)))])


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_the_deterministic_segmenter_dispatches_no_op_that_cuda_refuses(tmp_path: Path, arch: str) -> None:
    task = task_for(tmp_path, arch)
    torch.manual_seed(0)
    model = task.build_model().train()
    batch = first_batch(task)
    with OpRecorder() as recorder:
        task.losses(model, batch, Step(0, torch.device("cpu"), (0, 1), task.cfg.seed))["loss"].backward()
    assert {"convolution_backward", "_log_softmax_backward_data"} <= recorder.ops  # forward and backward seen
    assert not recorder.ops & NONDETERMINISTIC_ON_CUDA, sorted(recorder.ops & NONDETERMINISTIC_ON_CUDA)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("in_size, out_size, scale, recompute", [
    ((2, 2), (32, 32), 16.0, False), ((1, 1), (5, 7), None, False), ((5, 7), (20, 28), 4.0, False),
    ((9, 6), (4, 11), None, False), ((5, 7), (8, 11), 1.7, False), ((5, 7), (8, 11), 1.7, True)])
def test_matrix_resize_equals_bilinear_interpolate_forward_and_backward(in_size, out_size, scale, recompute: bool,
                                                                       align_corners: bool) -> None:
    from pipeline.segmenter.deterministic import MatmulBilinearUpsample, bilinear_resize, make_deterministic

    x = torch.randn(2, 3, *in_size, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 3, *out_size, dtype=torch.float64)
    if scale is None:
        expected = F.interpolate(x, size=out_size, mode="bilinear", align_corners=align_corners)
        got = bilinear_resize(x, out_size, align_corners)
    else:
        upsample = nn.Upsample(scale_factor=scale, mode="bilinear", align_corners=align_corners,
                               recompute_scale_factor=recompute)
        expected = upsample(x)
        twin = make_deterministic(nn.Sequential(upsample))[0]
        assert isinstance(twin, MatmulBilinearUpsample)
        got = twin(x)
    (expected_grad,) = torch.autograd.grad(expected, x, upstream)
    (got_grad,) = torch.autograd.grad(got, x, upstream)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-12, atol=1e-12)


def test_mean_pooling_and_masked_cross_entropy_equal_the_originals() -> None:
    from pipeline.segmenter.deterministic import GlobalAvgPool2d, masked_cross_entropy_sum

    x = torch.randn(2, 4, 5, 3, requires_grad=True)
    torch.testing.assert_close(GlobalAvgPool2d()(x), nn.AdaptiveAvgPool2d(1)(x))
    logits = torch.randn(2, 21, 6, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 21, (2, 6, 5))
    labels[0, :2] = IGNORE_INDEX
    expected = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
    got = masked_cross_entropy_sum(logits, labels, IGNORE_INDEX)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(got, logits)[0], torch.autograd.grad(expected, logits)[0],
                               rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="is a class index"):
        masked_cross_entropy_sum(logits, labels, 3)


def test_the_deterministic_segmenter_computes_what_the_ordinary_one_does() -> None:
    """DeepLabv3+ (ASPP pooling, the decoder's and the head's upsampling; DeepLabv3 has the same modules, its ops
    are checked above): the same logits, loss and gradients within float32 rounding (sums in another order)."""
    from pipeline.segmenter.deterministic import DeterministicASPPPooling, MatmulBilinearUpsample, make_deterministic
    from pipeline.segmenter.model import build_segmenter
    from pipeline.segmenter.train import segmentation_loss

    torch.manual_seed(0)
    ordinary = build_segmenter(TINY).train()
    twin = make_deterministic(copy.deepcopy(ordinary))
    assert ordinary.state_dict().keys() == twin.state_dict().keys()
    kinds = {type(module) for module in twin.modules()}
    assert {DeterministicASPPPooling, MatmulBilinearUpsample} <= kinds
    assert not kinds & {nn.Upsample, nn.AdaptiveAvgPool2d}
    images, labels = torch.rand(2, 3, 32, 32), torch.randint(0, 21, (2, 32, 32))
    labels[:, :4] = IGNORE_INDEX
    results = []
    for model, deterministic in ((ordinary, False), (twin, True)):
        torch.manual_seed(1)  # the same dropout masks
        logits = model(images)
        loss = segmentation_loss(logits, labels, deterministic)
        loss.backward()
        results.append((logits.detach(), loss.detach(), [p.grad for p in model.parameters()]))
    (logits, loss, grads), (twin_logits, twin_loss, twin_grads) = results
    torch.testing.assert_close(twin_logits, logits, rtol=1e-5, atol=1e-5 * float(logits.abs().max()))
    torch.testing.assert_close(twin_loss, loss, rtol=1e-5, atol=0.0)
    for (name, _), grad, twin_grad in zip(ordinary.named_parameters(), grads, twin_grads, strict=True):
        # each gradient within 1e-5 of its own scale (float32 rounding, amplified through the layers)
        torch.testing.assert_close(twin_grad, grad, rtol=1e-4, atol=1e-5 * float(grad.abs().max()), msg=name)


@pytest.mark.slow
def test_a_deterministic_run_repeats_to_the_same_weights(tmp_path: Path) -> None:
    """Through train_segmenter and the engine, deterministic algorithms on. (How close it ends to an ordinary run
    says little: with crops this small the two drift apart by ~100x per step from one float32 ulp; one forward
    and backward is compared above.)"""
    from pipeline.segmenter.train import train_segmenter

    images, labels = write_pairs(tmp_path / "data", count=3)

    def run(name: str) -> dict[str, torch.Tensor]:
        config = SegTrainConfig(images=images, labels=labels, out=tmp_path / name, model=TINY, iterations=3,
                                batch_size=2, crop=32, device="cpu", seed=4, deterministic=True)
        return torch.load(train_segmenter(config, progress=False), map_location="cpu", weights_only=True)["model"]

    first, again = run("a"), run("b")
    assert first.keys() == again.keys()
    for key in first:
        assert torch.equal(first[key], again[key]), key


@pytest.mark.cuda
def test_on_cuda_the_deterministic_segmenter_trains_under_deterministic_algorithms(tmp_path: Path) -> None:
    from s4net.engine.devices import deterministic_cublas

    deterministic_cublas()
    task = task_for(tmp_path)
    device = torch.device("cuda")
    batch = first_batch(task)
    step = Step(0, device, (0, 1), task.cfg.seed)
    grads = []
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for _ in range(2):
            torch.manual_seed(0)
            model = task.build_model().to(device).train()
            task.losses(model, batch, step)["loss"].backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        task.cfg.deterministic = False  # the ordinary segmenter: CUDA refuses it under deterministic algorithms
        torch.manual_seed(0)
        ordinary = task.build_model().to(device).train()
        with pytest.raises(RuntimeError, match="deterministic"):
            task.losses(ordinary, batch, step)["loss"].backward()
    finally:
        torch.use_deterministic_algorithms(previous)
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))
