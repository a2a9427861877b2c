"""Writing the synthetic salient world in the three real formats.

``OUT/salient/{train,val,test}.json`` + ``OUT/salient/images/``   COCO salient instances
``OUT/imagenet/train/<wnid>/<wnid>_<n>.JPEG`` + ``keywords.csv``  ImageNet subset
``OUT/imagenet/masks/train/<wnid>/<wnid>_<n>.png``               class masks (synthetic only,
                                                                  to score proxy labels)
``OUT/voc/VOC2012/``                                              VOC 2012 devkit layout
``OUT/preview/contact_sheet.png``                                 a look at samples, read back
``OUT/world.json``                                                parameters, counts, statistics

Every image draws from its own seed sequence ``(seed, dataset, split, index)``, so the
tree is byte-identical for a seed whatever the number of workers. The tree is built
in a hidden sibling folder and renamed into place when complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from tqdm import tqdm

from pipeline.classes import FOREGROUND_CLASSES, NUM_CLASSES, VOC_CLASSES, voc_palette
from pipeline.datasets.imagenet import KeywordEntry, load_wnid_map, write_keyword_table
from pipeline.datasets.synthetic.scenes import Scene, compose_scene, void_band
from pipeline.datasets.voc import write_voc_label
from s4net.data.coco import coco_document, encode_mask, mask_box
from s4net.errors import InputError
from s4net.io.atomic import atomic_write_text, write_json
from s4net.io.images import save_image, save_label_png

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
SALIENT_SPLITS = ("train", "val", "test")
_DATASET_CODES = {"salient": 1, "imagenet": 2, "voc": 3}
_SPLIT_CODES = {"train": 1, "val": 2, "test": 3}


@dataclass(frozen=True)
class WorldScale:
    """Sizes of one scale of the world.

    Attributes:
        image_size: long side of every image in pixels.
        salient: images per salient-instance split (train, val, test).
        imagenet_per_class: ImageNet-like images whose folder is each class.
        voc_train, voc_val: VOC-like images per split.
    """

    name: str
    image_size: int
    salient: tuple[int, int, int]
    imagenet_per_class: int
    voc_train: int
    voc_val: int


SCALES: dict[str, WorldScale] = {
    "tiny": WorldScale("tiny", 96, (24, 8, 8), 2, 16, 16),
    "small": WorldScale("small", 128, (400, 60, 60), 30, 200, 100),
    "medium": WorldScale("medium", 256, (3000, 300, 300), 250, 1464, 1449),
}


@dataclass(frozen=True)
class _Task:
    dataset: str
    split: str
    index: int
    seed: int
    image_size: int
    out: str


def _rng(task: _Task) -> np.random.Generator:
    entropy = [task.seed, _DATASET_CODES[task.dataset], _SPLIT_CODES[task.split], task.index]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def _image_shape(rng: np.random.Generator, size: int) -> tuple[int, int]:
    short = int(round(size * rng.uniform(0.75, 1.0)))
    return (size, short) if rng.random() < 0.5 else (short, size)


def _random_classes(rng: np.random.Generator, count: int) -> list[int]:
    return [int(c) for c in rng.integers(1, NUM_CLASSES, size=count)]


def _salient_task(task: _Task) -> dict[str, Any]:
    rng = _rng(task)
    height, width = _image_shape(rng, task.image_size)
    want_overlap = (task.index * 9) % 20 < 9  # 45% of images, interleaved, are built to overlap
    count = int(rng.choice([2, 3, 4, 5], p=[0.4, 0.3, 0.2, 0.1])) if want_overlap else int(
        rng.choice([1, 2, 3, 4], p=[0.5, 0.25, 0.15, 0.1])
    )
    scene = compose_scene(rng, height, width, _random_classes(rng, count), want_overlap, int(rng.integers(1, 5)))
    name = f"{task.split}_{task.index:06d}.jpg"
    save_image(Path(task.out) / "salient" / "images" / name, scene.image, quality=92)
    instances = []
    for k, occluded in enumerate(scene.occluded):
        mask = (scene.instance_ids == k + 1).astype(np.uint8)
        instances.append(
            {"segmentation": encode_mask(mask), "area": int(mask.sum()), "bbox": mask_box(mask), "occluded": occluded}
        )
    return {"file_name": name, "width": width, "height": height, "instances": instances,
            "full_areas": scene.full_areas}


def _keyword_scene(rng: np.random.Generator, task: _Task) -> tuple[Scene, list[int]]:
    """An ImageNet-like scene: the folder's class first, 28% of images with 1-2 more classes."""
    primary = task.index % len(FOREGROUND_CLASSES) + 1
    multi = (task.index * 7) % 25 < 7  # 28% of images, interleaved
    classes = [primary]
    if multi:
        others = [c for c in range(1, NUM_CLASSES) if c != primary]
        extra = rng.choice(others, size=int(rng.choice([1, 2], p=[0.7, 0.3])), replace=False)
        classes += [int(c) for c in extra]
        if rng.random() < 0.15:
            classes.append(classes[int(rng.integers(len(classes)))])
    else:
        classes *= int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
    height, width = _image_shape(rng, task.image_size)
    for _ in range(8):  # the folder's class must be in the picture
        scene = compose_scene(rng, height, width, classes, rng.random() < 0.3, int(rng.integers(1, 4)))
        if primary in scene.classes:
            break
    else:  # never label an image with a keyword it does not show
        raise RuntimeError(f"imagenet image {task.index}: could not place its {VOC_CLASSES[primary]} object")
    return scene, [primary] + [c for c in dict.fromkeys(scene.classes) if c != primary]


def _imagenet_task(task: _Task, wnids_by_class: dict[int, list[str]]) -> dict[str, Any]:
    rng = _rng(task)
    scene, keywords = _keyword_scene(rng, task)
    pool = wnids_by_class[keywords[0]]
    wnid = pool[(task.index // len(FOREGROUND_CLASSES)) % len(pool)]
    name = f"{wnid}_{task.index:06d}"
    root = Path(task.out) / "imagenet"
    save_image(root / "train" / wnid / f"{name}.JPEG", scene.image, quality=92)
    class_map = _class_map(scene)
    write_voc_label(root / "masks" / "train" / wnid / f"{name}.png", class_map)
    return {"image": f"train/{wnid}/{name}.JPEG", "keywords": [VOC_CLASSES[c] for c in keywords],
            "instances": len(scene.classes)}


def _class_map(scene: Scene) -> np.ndarray:
    lookup = np.array([0] + scene.classes + [0] * (256 - 1 - len(scene.classes)), dtype=np.uint8)
    return lookup[scene.instance_ids]


def _voc_task(task: _Task) -> dict[str, Any]:
    rng = _rng(task)
    n_classes = int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
    classes = [int(c) for c in rng.choice(np.arange(1, NUM_CLASSES), size=n_classes, replace=False)]
    classes = [c for c in classes for _ in range(int(rng.choice([1, 2], p=[0.7, 0.3])))][:4]
    height, width = _image_shape(rng, task.image_size)
    scene = compose_scene(rng, height, width, classes, rng.random() < 0.35, int(rng.integers(1, 5)))
    image_id = f"synth_{_SPLIT_CODES[task.split]}{task.index:05d}"
    root = Path(task.out) / "voc" / "VOC2012"
    save_image(root / "JPEGImages" / f"{image_id}.jpg", scene.image, quality=92)
    band = void_band(scene.instance_ids, radius=min(height, width) // 200)
    class_map = _class_map(scene)
    class_map[band] = 255
    instances = scene.instance_ids.copy()
    instances[band] = 255
    write_voc_label(root / "SegmentationClass" / f"{image_id}.png", class_map)
    save_label_png(root / "SegmentationObject" / f"{image_id}.png", instances, voc_palette())  # as VOC does
    return {"id": image_id, "classes": sorted(set(scene.classes))}


def _run_task(args: tuple[_Task, dict[int, list[str]]]) -> dict[str, Any]:
    task, wnids_by_class = args
    if task.dataset == "salient":
        return _salient_task(task)
    if task.dataset == "imagenet":
        return _imagenet_task(task, wnids_by_class)
    return _voc_task(task)


def _render(
    tasks: Sequence[_Task], wnids_by_class: dict[int, list[str]], workers: int, desc: str, progress: bool
) -> list[dict[str, Any]]:
    jobs = [(task, wnids_by_class) for task in tasks]
    bar = dict(total=len(jobs), desc=desc, disable=not progress, unit="img")
    if workers <= 1:
        return [_run_task(job) for job in tqdm(jobs, **bar)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(_run_task, jobs, chunksize=8), **bar))


def _write_salient(out: Path, split: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    images, annotations = [], []
    for image_id, record in enumerate(records, start=1):
        images.append({"id": image_id, "file_name": record["file_name"], "width": record["width"],
                       "height": record["height"]})
        for instance in record["instances"]:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "iscrowd": 0, **instance})
    write_json(out / "salient" / f"{split}.json",
               coco_document(images, annotations, description=f"synthetic salient {split}"))
    per_image = [len(r["instances"]) for r in records]
    fractions = [a / (r["width"] * r["height"]) for r in records for a in r["full_areas"]]
    return {
        "images": len(records),
        "instances": len(annotations),
        "objects_per_image": [min(per_image), max(per_image)],
        "object_area_fraction": [round(min(fractions), 4), round(max(fractions), 4)],
        "overlap_image_fraction": round(
            sum(any(i["occluded"] for i in r["instances"]) for r in records) / len(records), 4),
    }


def _write_keywords(out: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
    entries = sorted((KeywordEntry(r["image"], tuple(r["keywords"])) for r in records), key=lambda e: e.image)
    write_keyword_table(out / "imagenet" / "keywords.csv", entries)
    sizes = [len(e.keywords) for e in entries]
    return {
        "images": len(entries),
        "multi_keyword_fraction": round(sum(s > 1 for s in sizes) / len(sizes), 4),
        "keywords_per_image": [min(sizes), max(sizes)],
    }


def _write_voc_lists(out: Path, train: list[dict[str, Any]], val: list[dict[str, Any]]) -> dict[str, Any]:
    folder = out / "voc" / "VOC2012" / "ImageSets" / "Segmentation"
    for name, records in (("train", train), ("val", val), ("trainval", train + val)):
        atomic_write_text(folder / f"{name}.txt", "".join(f"{r['id']}\n" for r in records))
    present = sorted({c for r in val for c in r["classes"]})
    return {"train": len(train), "val": len(val), "val_classes_present": len(present)}


def _wnids_by_class() -> dict[int, list[str]]:
    grouped: dict[int, list[str]] = {c: [] for c in range(1, NUM_CLASSES)}
    for wnid, voc in sorted(load_wnid_map().items()):
        grouped[VOC_CLASSES.index(voc)].append(wnid)
    return grouped


def _request(seed: int, scale: WorldScale) -> dict[str, Any]:
    request = {"generator": "wsss-synthetic-world", "version": GENERATOR_VERSION, "seed": seed, "scale": asdict(scale)}
    return json.loads(json.dumps(request))  # as it reads back from world.json


def generate_world(
    out: str | os.PathLike,
    seed: int = 0,
    scale: str = "small",
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    preview: Callable[[Path], Path] | None = None,
) -> dict[str, Any]:
    """Generate the world into ``out`` and return its ``world.json`` content.

    An existing ``out`` made with the same seed, scale and generator version is left
    as it is (the call is idempotent); one made otherwise is an error unless
    ``overwrite``. ``preview`` renders a contact sheet from the finished tree.
    """
    if scale not in SCALES:
        raise InputError(None, f"unknown scale {scale!r}; expected one of {', '.join(SCALES)}")
    if seed < 0:
        raise InputError(None, f"seed must be >= 0, got {seed}")
    sizes = SCALES[scale]
    out = Path(out)
    request = _request(seed, sizes)
    existing = _existing_request(out)
    if existing == request:
        log.info("%s is up to date (seed %d, scale %s)", out, seed, scale)
        return _read_world(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        what = "another seed/scale" if existing else "other files"
        raise InputError(out, f"exists and holds {what}; pass --overwrite or choose another --out")
    partial = out.parent / f".{out.name}.partial"
    if partial.exists():
        shutil.rmtree(partial)  # left by a killed run: never trusted
    partial.mkdir(parents=True)
    wnids = _wnids_by_class()
    stats: dict[str, Any] = {"salient": {}}

    def tasks(dataset: str, split: str, count: int, start: int = 0) -> list[_Task]:
        return [_Task(dataset, split, start + i, seed, sizes.image_size, str(partial)) for i in range(count)]

    for split, count in zip(SALIENT_SPLITS, sizes.salient, strict=True):
        records = _render(tasks("salient", split, count), wnids, workers, f"salient {split}", progress)
        stats["salient"][split] = _write_salient(partial, split, records)
    records = _render(tasks("imagenet", "train", sizes.imagenet_per_class * 20), wnids, workers, "imagenet", progress)
    stats["imagenet"] = _write_keywords(partial, records)
    voc_train = _render(tasks("voc", "train", sizes.voc_train), wnids, workers, "voc train", progress)
    voc_val = _render(tasks("voc", "val", sizes.voc_val), wnids, workers, "voc val", progress)
    stats["voc"] = _write_voc_lists(partial, voc_train, voc_val)
    world = {**request, "stats": stats}
    if preview is not None:
        world["preview"] = preview(partial).relative_to(partial).as_posix()
    write_json(partial / "world.json", world, indent=2)
    _replace_dir(partial, out)
    return world


def _existing_request(out: Path) -> dict[str, Any] | None:
    try:
        world = _read_world(out)
    except (OSError, ValueError):
        return None
    return {key: world.get(key) for key in ("generator", "version", "seed", "scale")}


def _read_world(out: Path) -> dict[str, Any]:
    return json.loads((out / "world.json").read_text(encoding="utf-8"))


def _replace_dir(partial: Path, out: Path) -> None:
    if out.exists():
        old = out.parent / f".{out.name}.old"
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
        os.replace(partial, out)
        shutil.rmtree(old)
    else:
        os.replace(partial, out)

