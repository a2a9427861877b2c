"""``wsss proxy-labels``: S4Net cues -> keyword assignment -> proxy label PNGs + manifest.

Output, under ``OUT``:

* ``labels/<image path>.png``: VOC-palette labels (0 background, 1..20 classes, 255 ignore);
* ``manifest[.shard-I-of-N].jsonl``: one line per image (keywords, instances kept and
  rejected with their scores, per-class pixel counts, the PNG's sha256, or why it was
  skipped), appended as images finish;
* ``overlays/<image path>.png`` with ``--overlays``.

The run is resumable: an image whose manifest line names an existing PNG with the
same checksum, made with the same settings, is not redone. It streams: images are
read, labelled and written batch by batch, so memory does not grow with their number.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cues import CUES, make_cue
from pipeline.cues.cam import load_cam
from pipeline.cues.crf import CRFConfig, refine_labels
from pipeline.cues.detections import subset_detections
from pipeline.cues.instance_classifier import ClassifierConfig, fit_instance_classifier, load_classifier
from pipeline.cues.keyword_assignment import AssignmentConfig
from pipeline.cues.label_painting import ProxyConfig
from pipeline.cues.result import CueResult
from pipeline.datasets.imagenet import ImageNetSubset, KeywordEntry
from pipeline.datasets.voc import label_overlay, write_voc_label
from pipeline.proxy_labels.manifest import Shard, file_sha256, is_done, label_relpath, pixel_counts, read_manifests
from s4net.errors import InputError
from s4net.io.atomic import remove_stale_temporaries, write_json
from s4net.io.images import save_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProxyLabelSettings:
    """Everything that decides a label's content (its fingerprint goes into each manifest line)."""

    cue: str = "instances"
    assignment: AssignmentConfig = field(default_factory=AssignmentConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    crf: CRFConfig | None = None

    def __post_init__(self) -> None:
        if self.cue not in CUES:
            raise ValueError(f"unknown cue {self.cue!r}; expected one of {list(CUES)}")

    def fingerprint(self, checkpoint_sha: str, classifier_sha: str | None) -> str:
        text = json.dumps({"settings": asdict(self), "checkpoint": checkpoint_sha, "classifier": classifier_sha},
                          sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class _Pending:
    """What a worker needs to finish one image (CRF if asked, PNG, overlay)."""

    entry: KeywordEntry
    image: np.ndarray
    result: CueResult
    record: dict[str, Any]


def _finish(pending: _Pending, out: Path, crf: CRFConfig | None, overlays: bool) -> dict[str, Any]:
    """Refine (optional), write the label PNG (atomic) and the overlay; return the manifest record."""
    result = pending.result
    labels = result.labels
    if crf is not None and result.probabilities is not None:
        labels = refine_labels(pending.image, labels, result.probabilities, result.label_ids, crf)
    relative = label_relpath(pending.entry.image)
    path = out / "labels" / relative
    write_voc_label(path, labels)
    if overlays:
        save_image(out / "overlays" / Path(relative).with_suffix(".jpg"), label_overlay(pending.image, labels))
    record = dict(pending.record)
    record.update(label=relative, class_pixels=pixel_counts(labels), sha256=file_sha256(path))
    return record


def run_proxy_labels(
    checkpoint: str | os.PathLike,
    images: str | os.PathLike,
    out: str | os.PathLike,
    keywords: str | os.PathLike | None = None,
    settings: ProxyLabelSettings = ProxyLabelSettings(),
    classifier_path: str | os.PathLike | None = None,
    classifier_config: ClassifierConfig = ClassifierConfig(),
    cam_path: str | os.PathLike | None = None,
    shard: Shard = Shard(),
    workers: int = 1,
    batch_size: int = 8,
    device: str = "cpu",
    overlays: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write proxy labels for (a shard of) a keyword-tagged image set; returns a summary.

    The ``instances`` cue trains its instance classifier (saved at ``classifier_path``,
    default ``OUT/instance_classifier.pt``) when there are multi-keyword images and none is
    saved yet; the ``cam_saliency`` cue needs ``cam_path``, a classifier from ``wsss train-cam``.
    """
    from s4net.checkpoint import load_checkpoint

    out = Path(out)
    subset = ImageNetSubset(images, keywords)
    model = load_checkpoint(checkpoint, map_location=device).for_inference()
    cam = None
    if settings.cue == "cam_saliency":
        if cam_path is None:
            raise InputError(None, "the cam_saliency cue needs --cam, a CAM classifier trained with `wsss train-cam`")
        cam, cam_report = load_cam(cam_path, map_location=device)
        log.info("CAM classifier %s (held-out keyword accuracy %s)", cam_path,
                 cam_report.get("heldout_keyword_accuracy"))
    out.mkdir(parents=True, exist_ok=True)  # only once the inputs are known to be readable
    cleared = remove_stale_temporaries(out)
    if cleared:
        log.info("removed %d temporary files left by a killed run", cleared)
    checkpoint_sha = file_sha256(checkpoint)
    classifier, classifier_sha = None, None
    needs_classifier = settings.cue == "instances" and any(len(e.keywords) > 1 for e in subset.entries)
    if needs_classifier:
        path = Path(classifier_path) if classifier_path else out / "instance_classifier.pt"
        if path.is_file():
            classifier, report = load_classifier(path)
            log.info("instance classifier %s (held-out accuracy %s)", path, report.get("heldout_accuracy"))
        else:
            classifier, report = fit_instance_classifier(model, subset, settings.assignment, classifier_config, path,
                                                         batch_size, device, progress)
        classifier_sha = file_sha256(path)
    if cam is not None:
        classifier_sha = file_sha256(cam_path)
    fingerprint = settings.fingerprint(checkpoint_sha, classifier_sha)
    cue = make_cue(settings.cue, settings.assignment, settings.proxy, classifier, cam)
    done = read_manifests(out)
    mine = [i for i in range(len(subset)) if i % shard.count == shard.index]
    todo = [i for i in mine if not is_done(done.get(subset.entries[i].image), out, fingerprint)]
    log.info("%d images in shard %d/%d, %d already done", len(mine), shard.index, shard.count, len(mine) - len(todo))
    skipped: list[dict[str, str]] = []
    entries = {subset.entries[i].image: subset.entries[i] for i in todo}
    written = 0
    manifest_path = out / shard.manifest_name
    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    in_flight: deque[Future] = deque()
    try:
        with open(manifest_path, "a", encoding="utf-8") as manifest:

            def record_line(record: dict[str, Any]) -> None:
                manifest.write(json.dumps(record, separators=(",", ":")) + "\n")
                manifest.flush()

            def drain(limit: int) -> None:
                nonlocal written
                while len(in_flight) > limit:
                    record_line(in_flight.popleft().result())
                    written += 1

            for det in subset_detections(model, subset, todo, batch_size, device, progress, skipped,
                                         f"proxy labels ({settings.cue})"):
                entry = entries[det.key]
                result = cue(det, entry.keywords)
                record = {"image": entry.image, "keywords": list(entry.keywords),
                          "size": [det.image.shape[1], det.image.shape[0]], **result.record, "settings": fingerprint}
                pending = _Pending(entry, det.image, result, record)
                if pool is None:
                    record_line(_finish(pending, out, settings.crf, overlays))
                    written += 1
                else:
                    in_flight.append(pool.submit(_finish, pending, out, settings.crf, overlays))
                    drain(2 * workers)
            drain(0)
            for item in skipped:  # keyed by the table's own path: a link may point anywhere, or nowhere
                record_line({"image": entries[item["key"]].image, "skipped": item["reason"]})
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    summary = {
        "shard": [shard.index, shard.count],
        "images": len(mine),
        "written": written,
        "reused": len(mine) - len(todo),
        "skipped": len(skipped),
        "cue": settings.cue,
        "crf": settings.crf is not None,
        "settings": fingerprint,
        "checkpoint": str(checkpoint),
        "manifest": manifest_path.name,
    }
    write_json(out / shard.summary_name, summary, indent=2)
    return summary
