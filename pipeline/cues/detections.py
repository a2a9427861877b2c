"""S4Net's detections of the images of a keyword-tagged subset, streamed in batches (the cues' input)."""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from pipeline.datasets.imagenet import ImageNetSubset
from s4net.inference import Detections, run_detector


def subset_detections(model: Any, subset: ImageNetSubset, indices: Sequence[int], batch_size: int, device: Any,
                      progress: bool, skipped: list[dict[str, str]], desc: str,
                      autocast: Any = None) -> Iterator[Detections]:
    """Detections (with instance features) of ``subset``'s images at ``indices``, keyed by their table path.

    Images that cannot be read are appended to ``skipped`` instead. ``autocast``: the dtype S4Net runs in
    (None: float32; see :func:`s4net.inference.inference_autocast`).
    """
    items = ((subset.entries[i].image, subset.image_path(i)) for i in indices)
    return run_detector(model, items, batch_size=batch_size, device=device, progress=progress, total=len(indices),
                        skipped=skipped, features=True, desc=desc, autocast=autocast)
