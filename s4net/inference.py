"""Batched inference over image files: detections, COCO results, overlays, skipped images.

Images are decoded in a background thread pool so the model is not starved; a
bad image is reported and skipped, never fatal. For consumers in other processes,
:func:`run_detector` can hand out :class:`PackedDetections`: each mask cut down, on the
device, to the window that holds its nonzero pixels (lossless, and a fraction of the bytes).
"""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from s4net.data.coco import encode_mask
from s4net.errors import InputError
from s4net.io.images import IMAGE_EXTENSIONS, load_rgb

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Detections:
    """Detections of one image, on the CPU as numpy.

    Attributes:
        key: the caller's identifier of the image (an id or a path).
        image: uint8[H, W, 3] (kept for overlays).
        boxes: float32[K, 4] (x1, y1, x2, y2) original pixels, best first.
        scores: float32[K] objectness.
        masks: float32[K, H, W] foreground probabilities.
        features: float32[K, D] backbone features averaged inside each mask
            (levels c3..c5 concatenated; see :func:`mask_pooled_features`), when asked for.
    """

    key: Any
    image: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    masks: np.ndarray
    features: np.ndarray | None = None


@dataclass(frozen=True)
class PackedMasks:
    """Masks float32[K, H, W] stored as the window of each that holds all its nonzero pixels (lossless).

    S4Net's masks are 0 outside their box, so the windows are about the boxes: a few
    percent of the full-image planes, which is what crosses a process boundary.

    Attributes:
        shape: (H, W) of the image.
        windows: int64[K, 4] (y1, y2, x1, x2) of each mask's window (empty for an all-zero mask).
        values: float32[sum of window areas] the windows' pixels, mask after mask, row-major.
    """

    shape: tuple[int, int]
    windows: np.ndarray
    values: np.ndarray

    @classmethod
    def pack(cls, masks: torch.Tensor) -> "PackedMasks":
        """Pack Tensor[K, H, W] (on any device; two transfers to the host in all)."""
        count, height, width = masks.shape
        if count == 0:
            return cls((height, width), np.zeros((0, 4), dtype=np.int64), np.zeros(0, dtype=np.float32))
        masks = masks.float()
        nonzero = masks != 0
        rows, cols = nonzero.any(dim=2), nonzero.any(dim=1)  # [K, H], [K, W]
        span = torch.arange(1, height + 1, device=masks.device), torch.arange(1, width + 1, device=masks.device)
        # the first and last nonzero row (column) of each mask: its window, empty when all is zero
        y2 = (rows * span[0]).amax(dim=1)
        y1 = torch.where(rows, span[0], height + 1).amin(dim=1) - 1
        x2 = (cols * span[1]).amax(dim=1)
        x1 = torch.where(cols, span[1], width + 1).amin(dim=1) - 1
        windows = torch.stack([y1.clamp(max=height), y2, x1.clamp(max=width), x2], dim=1)
        windows[y2 == 0] = 0
        windows_np = windows.cpu().numpy().astype(np.int64)
        crops = [masks[k, a:b, c:d].reshape(-1) for k, (a, b, c, d) in enumerate(windows_np.tolist())]
        return cls((height, width), windows_np, torch.cat(crops).cpu().numpy())

    def unpack(self) -> np.ndarray:
        """float32[K, H, W]: the masks, bit for bit."""
        masks = np.zeros((len(self.windows), *self.shape), dtype=np.float32)
        start = 0
        for k, (a, b, c, d) in enumerate(self.windows.tolist()):
            size = (b - a) * (d - c)
            masks[k, a:b, c:d] = self.values[start : start + size].reshape(b - a, d - c)
            start += size
        return masks

    @property
    def nbytes(self) -> int:
        """Bytes of the packed arrays."""
        return self.windows.nbytes + self.values.nbytes


@dataclass(frozen=True)
class PackedDetections:
    """:class:`Detections` with :class:`PackedMasks`: what :func:`run_detector` yields with ``packed=True``."""

    key: Any
    image: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    masks: PackedMasks
    features: np.ndarray | None = None

    def unpack(self) -> Detections:
        """The :class:`Detections` these were packed from (masks restored bit for bit)."""
        return Detections(self.key, self.image, self.boxes, self.scores, self.masks.unpack(), self.features)


FEATURE_LEVELS = ("c3", "c4", "c5")


def mask_pooled_features(levels: dict[str, torch.Tensor], masks: torch.Tensor,
                         names: Sequence[str] = FEATURE_LEVELS) -> torch.Tensor:
    """Tensor[K, D]: each level's features of one image averaged inside each mask, levels concatenated.

    Args:
        levels: backbone outputs of one image, Tensor[C_l, h_l, w_l] each.
        masks: Tensor[K, H, W] mask probabilities at any resolution covering the same
            image (they are area-resampled to each level, then used as weights).
    """
    pooled = []
    for name in names:
        feature = levels[name].float()
        weights = torch.nn.functional.interpolate(masks[:, None].float(), size=feature.shape[-2:], mode="area")[:, 0]
        total = weights.flatten(1).sum(1, keepdim=True).clamp(min=1e-6)
        pooled.append(torch.einsum("khw,chw->kc", weights, feature) / total)
    return torch.cat(pooled, dim=1) if pooled else masks.new_zeros((masks.shape[0], 0))


def list_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Paths given directly plus every path named like an image found (recursively, sorted) under given folders.

    Names are listed whatever they are: a named pipe, a socket, a device, a folder or a dangling
    link named ``*.jpg`` is listed too, so that :func:`run_detector` reports it as skipped (it is
    refused before it is opened) instead of it vanishing without a word.
    """
    files: list[Path] = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            files.extend(sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS))
        else:
            files.append(entry)
    return files


def _load(item: tuple[Any, Path]) -> tuple[Any, Path, np.ndarray | None, str | None]:
    key, path = item
    try:
        return key, path, load_rgb(path), None
    except InputError as exc:
        return key, path, None, exc.problem


def prefetch(pool: ThreadPoolExecutor, load: Callable[[T], R], items: Iterable[T], ahead: int) -> Iterator[R]:
    """``load(item)`` of each item, run in ``pool`` and yielded in order, at most ``ahead`` loaded or loading at a
    time (memory stays flat)."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(load, item))
        if len(pending) > ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _to_device(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8[H, W, 3] -> float Tensor[3, H, W] in [0, 1] on ``device`` (the bytes cross as uint8, pinned for CUDA)."""
    tensor = torch.from_numpy(np.require(image, requirements="W"))
    if device.type == "cuda":
        tensor = tensor.pin_memory().to(device, non_blocking=True)
    else:
        tensor = tensor.to(device)
    return tensor.permute(2, 0, 1).float().div_(255.0)


def inference_autocast(device: torch.device | str, amp: bool = True) -> torch.dtype | None:
    """The autocast dtype inference runs in: on CUDA with ``amp``, bfloat16 where the GPU supports it, else
    float16; otherwise None (float32). Boxes, scores and masks come out float32 either way."""
    from s4net.engine.loop import resolve_precision

    # training's rule (the GradScaler it adds for float16 is no matter here), without the CPU's bfloat16 option
    return resolve_precision(torch.device(device), amp, cpu_bf16=False).dtype


def run_detector(
    model: torch.nn.Module,
    items: Iterable[tuple[Any, Path]],
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    progress: bool = True,
    total: int | None = None,
    skipped: list[dict[str, Any]] | None = None,
    features: bool = False,
    desc: str = "s4net predict",
    packed: bool = False,
    decode_workers: int = 2,
    autocast: torch.dtype | None = None,
) -> Iterator[Detections] | Iterator[PackedDetections]:
    """Yield :class:`Detections` for ``(key, path)`` items; unreadable images go to ``skipped``
    as ``{"key", "image" (the path), "reason"}``.

    Images are decoded by ``decode_workers`` threads, up to two batches ahead of the model.
    With ``features``, each detection also carries its mask-pooled backbone features; with
    ``packed``, :class:`PackedDetections` come out instead (masks packed on the device:
    fewer bytes to the host and to other processes, the same values). ``autocast``: the dtype
    the network runs in (None: float32; see :func:`inference_autocast`).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if decode_workers < 1:
        raise ValueError(f"decode_workers={decode_workers} must be >= 1")
    model.eval()
    device = torch.device(device)
    bar = tqdm(total=total, disable=not progress, desc=desc, unit="img", dynamic_ncols=True)
    captured: list[dict[str, torch.Tensor]] = []
    hook = model.backbone.register_forward_hook(lambda _m, _i, out: captured.append(out)) if features else None
    try:
        with ThreadPoolExecutor(max_workers=decode_workers, thread_name_prefix="decode") as pool:
            loaded = prefetch(pool, _load, items, 2 * batch_size)
            batch: list[tuple[Any, np.ndarray]] = []

            def flush() -> Iterator[Detections] | Iterator[PackedDetections]:
                tensors = [_to_device(img, device) for _, img in batch]
                captured.clear()
                with torch.inference_mode(), torch.autocast(device.type, dtype=autocast or torch.float32,
                                                            enabled=autocast is not None):
                    outputs = model(tensors)
                    pooled = [None] * len(batch)
                    if features:
                        levels = captured[-1]
                        pooled = [
                            mask_pooled_features({k: v[i] for k, v in levels.items()}, out["masks"][:, 0]).cpu().numpy()
                            for i, out in enumerate(outputs)
                        ]
                    masks = [PackedMasks.pack(out["masks"][:, 0]) if packed
                             else out["masks"][:, 0].float().cpu().numpy() for out in outputs]
                kind = PackedDetections if packed else Detections
                for (key, img), out, feats, mask in zip(batch, outputs, pooled, masks, strict=True):
                    yield kind(
                        key=key,
                        image=img,
                        boxes=out["boxes"].float().cpu().numpy(),
                        scores=out["scores"].float().cpu().numpy(),
                        masks=mask,
                        features=feats,
                    )
                bar.update(len(batch))
                batch.clear()

            for key, path, image, problem in loaded:
                if image is None:
                    log.warning("%s: skipped (%s)", path, problem)
                    if skipped is not None:
                        skipped.append({"key": key, "image": str(path), "reason": str(problem)})
                    bar.update(1)
                    continue
                batch.append((key, image))
                if len(batch) == batch_size:
                    yield from flush()
            if batch:
                yield from flush()
    finally:
        if hook is not None:
            hook.remove()
        bar.close()


def coco_results(image_id: int, detections: Detections, mask_threshold: float = 0.5) -> list[dict[str, Any]]:
    """COCO results entries (RLE masks binarised at ``mask_threshold``, category 1) of one image."""
    results = []
    for box, score, prob in zip(detections.boxes, detections.scores, detections.masks, strict=True):
        x1, y1, x2, y2 = (float(v) for v in box)
        results.append(
            {
                "image_id": int(image_id),
                "category_id": 1,
                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                "score": round(float(score), 5),
                "segmentation": encode_mask(prob > mask_threshold),
            }
        )
    return results


def predict_annotated(
    model: torch.nn.Module,
    annotations: Path,
    images: Path,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    progress: bool = True,
    mask_threshold: float = 0.5,
    autocast: torch.dtype | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the model over every image of a COCO json; returns (GT document, COCO results).

    Unlike :func:`run_detector` on loose files, an unreadable image here is an error:
    an evaluation that silently dropped images would be a wrong number.
    """
    from s4net.data.coco import SalientInstanceDataset

    dataset = SalientInstanceDataset(annotations, images)
    items = [(image_id, dataset.image_path(image_id)) for image_id in dataset.image_ids]
    skipped: list[dict[str, str]] = []
    results: list[dict[str, Any]] = []
    for det in run_detector(model, items, batch_size, device, progress, total=len(items), skipped=skipped,
                            autocast=autocast):
        results.extend(coco_results(det.key, det, mask_threshold))
    if skipped:
        first = skipped[0]
        raise InputError(first["image"], f"cannot evaluate: {first['reason']} ({len(skipped)} unreadable image(s))")
    return dataset.coco.dataset, results
