"""Batched inference over image files: detections, COCO results, overlays, skipped images.

Images are decoded in a background thread pool so the model is not starved; a
bad image is reported and skipped, never fatal.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from s4net.data.coco import encode_mask
from s4net.errors import InputError
from s4net.io.images import IMAGE_EXTENSIONS, load_rgb

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detections:
    """Detections of one image, on the CPU as numpy.

    Attributes:
        key: the caller's identifier of the image (an id or a path).
        image: uint8[H, W, 3] (kept for overlays).
        boxes: float32[K, 4] (x1, y1, x2, y2) original pixels, best first.
        scores: float32[K] objectness.
        masks: float32[K, H, W] foreground probabilities.
    """

    key: Any
    image: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    masks: np.ndarray


def list_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Files given directly plus image files found (recursively, sorted) under given folders."""
    files: list[Path] = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            files.extend(sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()))
        else:
            files.append(entry)
    return files


def _load(item: tuple[Any, Path]) -> tuple[Any, Path, np.ndarray | None, str | None]:
    key, path = item
    try:
        return key, path, load_rgb(path), None
    except InputError as exc:
        return key, path, None, exc.problem


def run_detector(
    model: torch.nn.Module,
    items: Iterable[tuple[Any, Path]],
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    progress: bool = True,
    total: int | None = None,
    skipped: list[dict[str, str]] | None = None,
) -> Iterator[Detections]:
    """Yield :class:`Detections` for ``(key, path)`` items; unreadable images go to ``skipped``.

    Images of a batch are decoded in parallel threads while the previous batch runs.
    """
    model.eval()
    device = torch.device(device)
    bar = tqdm(total=total, disable=not progress, desc="s4net predict", unit="img", dynamic_ncols=True)
    with ThreadPoolExecutor(max_workers=2) as pool:
        loaded = pool.map(_load, items)
        batch: list[tuple[Any, np.ndarray]] = []

        def flush() -> Iterator[Detections]:
            tensors = [torch.from_numpy(np.require(img, requirements="W")).to(device).permute(2, 0, 1).float().div_(255.0) for _, img in batch]
            with torch.inference_mode():
                outputs = model(tensors)
            for (key, img), out in zip(batch, outputs):
                yield Detections(
                    key=key,
                    image=img,
                    boxes=out["boxes"].float().cpu().numpy(),
                    scores=out["scores"].float().cpu().numpy(),
                    masks=out["masks"][:, 0].float().cpu().numpy(),
                )
            bar.update(len(batch))
            batch.clear()

        for key, path, image, problem in loaded:
            if image is None:
                log.warning("%s: skipped (%s)", path, problem)
                if skipped is not None:
                    skipped.append({"image": str(path), "reason": str(problem)})
                bar.update(1)
                continue
            batch.append((key, image))
            if len(batch) == batch_size:
                yield from flush()
        if batch:
            yield from flush()
    bar.close()


def coco_results(image_id: int, detections: Detections, mask_threshold: float = 0.5) -> list[dict[str, Any]]:
    """COCO results entries (RLE masks binarised at ``mask_threshold``, category 1) of one image."""
    results = []
    for box, score, prob in zip(detections.boxes, detections.scores, detections.masks):
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
    for det in run_detector(model, items, batch_size, device, progress, total=len(items), skipped=skipped):
        results.extend(coco_results(det.key, det, mask_threshold))
    if skipped:
        first = skipped[0]
        raise InputError(first["image"], f"cannot evaluate: {first['reason']} ({len(skipped)} unreadable image(s))")
    return dataset.coco.dataset, results
