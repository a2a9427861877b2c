# Parameters read from the config in one place; defaults and checks in workflows/schemas/config.schema.yaml.
# What the package knows (cue names, shard file names, the ablations' run names) is asked of it, not restated.
import json
import os
import re
import shlex
from types import SimpleNamespace

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from pipeline.cues import CUE_MODELS, CUES as KNOWN_CUES
from pipeline.proxy_labels.manifest import Shard
from s4net.reproduction.variants import PEER_BACKBONES, RUN_NAME, RUN_WILDCARDS, STUDIES as STUDY_NAMES
from s4net.reproduction.variants import run_flags, study_peers, variant_run

SCHEMA = os.path.join(workflow.basedir, "workflows", "schemas", "config.schema.yaml")
validate(config, SCHEMA)  # a wrong key or type stops here, before any job, naming it


def schema_defaults(node):
    """The ``default`` of every property of a schema node, nested objects included."""
    if node.get("type") != "object":
        return node.get("default")
    return {key: schema_defaults(child) for key, child in node.get("properties", {}).items()}


def merged(defaults, given):
    """``given`` over ``defaults``, key by key inside nested dicts; keys the defaults lack are kept (the schema has
    already refused them wherever it allows no others, so only free-form maps such as saliency_maps hold them)."""
    if not isinstance(defaults, dict) or not isinstance(given, dict):
        return given
    out = {key: merged(defaults.get(key), given[key]) if key in given else value for key, value in defaults.items()}
    out.update({key: value for key, value in given.items() if key not in defaults})
    return out


with open(SCHEMA) as handle:
    SETTINGS = merged(schema_defaults(yaml.safe_load(handle)), config)

RESULTS = SETTINGS["results"]
SEED = SETTINGS["seed"]
DEMO_SCALE = SETTINGS["demo_scale"]
DEMO = DEMO_SCALE is not None
GPUS = SETTINGS["gpus"]
DEVICE = "cuda" if GPUS else "cpu"  # every job that runs a network
JOBS = SETTINGS["resources"]  # job kind -> threads, mem_mb, runtime
S4NET = SETTINGS["s4net"]
WSSS = SETTINGS["wsss"]
SHARDS = WSSS["shards"]
# how `wsss proxy-labels --shard I/N` names its files, with the shard index as the wildcard {shard}
SHARD_SUFFIX = Shard.suffix_for("{shard}", SHARDS)
SHARD_SUMMARY = Shard.summary_name_for("{shard}", SHARDS)
CUES = list(WSSS["cues"])
CUE_PATTERN = "|".join(KNOWN_CUES)  # every cue `wsss proxy-labels --cue` knows
SOURCES = list(WSSS["cues"]) + (["ground_truth"] if WSSS["reference"] else [])


def data_paths(settings, results):
    """Every input path of the DAG: the synthetic world's under RESULTS/data, or the user's ``data.*``."""
    if settings["demo_scale"] is not None:
        world = f"{results}/data"
        return {
            "salient_train": f"{world}/salient/train.json",
            "salient_test": f"{world}/salient/test.json",
            "salient_images": f"{world}/salient/images",
            "imagenet": f"{world}/imagenet",
            "keywords": f"{world}/imagenet/keywords.csv",
            "proxy_gt": f"{world}/imagenet/masks",
            "voc_root": f"{world}/voc/VOC2012",
            "val_split": "val",
            # the demo's reference trains on the ground truth of the very images the cues label
            "reference_images": f"{world}/imagenet",
            "reference_labels": f"{world}/imagenet/masks",
            "reference_ids": None,
        }
    data = dict(settings["data"])
    missing = [key for key in ("salient_train", "salient_test", "salient_images", "imagenet", "voc_root") if not data[key]]
    if missing:
        raise WorkflowError(f"config: demo_scale is null, so data.{missing[0]} must be set (README, 'Real data'); missing: "
                         + ", ".join(f"data.{key}" for key in missing))
    voc = data["voc_root"]
    data["keywords"] = data["keywords"] or f"{results}/imagenet_keywords.csv"  # rule imagenet_keywords writes it
    data["reference_images"] = f"{voc}/JPEGImages"
    data["reference_labels"] = data["reference_labels"] or f"{voc}/SegmentationClass"
    data["reference_ids"] = f"{voc}/ImageSets/Segmentation/{data['reference_split']}.txt"
    return data


DATA = data_paths(SETTINGS, RESULTS)
WORLD = f"{RESULTS}/data/world.json"  # the demo's generated world; every demo input depends on it


def data_input(*keys):
    """Inputs for reading ``DATA[key]``: the demo world's marker file, or the user's files themselves."""
    return [WORLD] if DEMO else [DATA[key] for key in keys]


# How many GPUs a job asks for, by what it runs: a trainer spreads over the config's gpus (torchrun, one process per
# GPU); any other network takes at most one; the rest none. Local runs cap the sum with --resources gpu=K.
GPU_KINDS = {"training": GPUS, "single": min(GPUS, 1), "none": 0}

# The prefix of every command that may run on a GPU (pipeline/launch.py): it takes the job's own gpu resource, so a
# profile's set-resources reaches it; it runs the command as it is for 0 or 1 GPU and under torchrun for more, and
# outside SLURM it pins the job to free GPUs (CUDA_VISIBLE_DEVICES). `exec`: the job's shell gives its process to the
# launcher, so a SIGTERM that SLURM sends to every process of the job does not kill the shell (bash dies of it) and
# end the job while the trainer is still writing its checkpoint; the command's exit status is the job's.
LAUNCH_TRAINING = "exec python -m pipeline.launch --gpus {resources.gpu} -- "
# proxy labels scale by shards, not by GPUs per job
PROXY_LABELS_GPU_ADVICE = "to use N GPUs set wsss.shards: N (one shard per job, gathered by the workflow)"


def launch_single(rule_name, advice=None):
    """The launcher prefix of a job that is no trainer: more than one GPU is refused, naming the rule (and
    ``advice``)."""
    advice_flag = f" --advice {shlex.quote(advice)}" if advice else ""
    return f"exec python -m pipeline.launch --gpus {{resources.gpu}} --single-gpu-job {rule_name}{advice_flag} -- "


def job_resources(kind, gpus):
    """The memory and wall time of a job kind from the config's `resources`, and its GPUs: ``gpus`` is "training",
    "single" or "none" (``GPU_KINDS``; "none" declares no gpu resource); threads are ``JOBS[kind]["threads"]``."""
    spec = JOBS[kind]
    gpu = {"gpu": GPU_KINDS[gpus]} if gpus != "none" else {}
    return {"mem_mb": spec["mem_mb"], "runtime": spec["runtime"], **gpu}


NAMED_WEIGHTS = ("torchvision", "package")  # weight sources that are no file: torchvision's cache, Lite0's package


def weights_input(name, value):
    """``{name: value}`` for a weights file a job reads (an input: a missing file stops the plan); nothing for None
    or a named source (``NAMED_WEIGHTS``)."""
    return {name: value} if value is not None and value not in NAMED_WEIGHTS else {}


def optional_flag(flag, value):
    """``flag value`` (shell-quoted) for a set value, nothing for None."""
    return f"{flag} {shlex.quote(str(value))}" if value is not None else ""


def shard_files(name_for, cue):
    """The manifest (``Shard.manifest_name_for``) or summary (``Shard.summary_name_for``) of every shard of one cue."""
    return sorted(f"{RESULTS}/proxy/{cue}/{name_for(shard, SHARDS)}" for shard in range(SHARDS))


def cue_models(wildcards):
    """The model a cue's proxy-label jobs read besides S4Net (``pipeline.cues.CUE_MODELS``): the instance
    classifier, the CAM classifier, or none."""
    kind = CUE_MODELS[wildcards.cue]
    if kind == "classifier":
        return {kind: rules.instance_classifier.output.classifier}
    if kind == "cam":
        return {kind: rules.train_cam.output.cam}
    return {}


def cue_model_flags(wildcards, input):
    """`wsss proxy-labels` flags naming the model of ``cue_models`` (and the CAM's threshold)."""
    kind = CUE_MODELS[wildcards.cue]
    if kind is None:
        return ""
    threshold = f" --cam-threshold {WSSS['cam']['threshold']}" if kind == "cam" else ""
    return f"--{kind} {shlex.quote(input[kind])}{threshold}"


def segmenter_labels(wildcards):
    """The files a segmenter's labels depend on: a cue's gathered manifest, or the reference's data."""
    if wildcards.source == "ground_truth":
        return data_input("reference_labels", "reference_ids")
    return [rules.gather_proxy_labels.output.manifest.format(cue=wildcards.source)]


def segmenter_data(source):
    """``--images``, ``--labels`` (and ``--ids``) of one label source's segmenter."""
    if source == "ground_truth":
        return (f"--images {shlex.quote(DATA['reference_images'])} --labels {shlex.quote(DATA['reference_labels'])} "
                + optional_flag("--ids", DATA["reference_ids"]))
    return f"--images {shlex.quote(DATA['imagenet'])} --labels {shlex.quote(f'{RESULTS}/proxy/{source}/labels')}"


def named(pairs):
    """``NAME=PATH`` arguments of wsss report, shell-quoted."""
    return " ".join(shlex.quote(f"{name}={path}") for name, path in pairs)


EXPERIMENTS = SETTINGS["experiments"]
EXPERIMENT_DIR = f"{RESULTS}/experiments"
STUDIES = {study: list(EXPERIMENTS[study]) for study in STUDY_NAMES}


def run_folder(study, variant, seed):
    """Where the run of one variant of a study lives (runs equal to the paper's S4Net are shared across studies)."""
    return f"{EXPERIMENT_DIR}/runs/{variant_run(study, variant, EXPERIMENTS['base_backbone'])}/seed{seed}"


def experiment_peers(study):
    """{peer row name: (its backbone, the S4Net variant it is compared with)} of a study, when peers are on."""
    if not EXPERIMENTS["peer"]:
        return {}
    return study_peers(study, STUDIES[study], EXPERIMENTS["base_backbone"])


def kept_or_run(path):
    """A run's metrics file under EXPERIMENT_DIR, or its copy in experiments.kept when one is there (that run is then
    read, not trained again: finished runs survive a fresh checkout when the kept folder is committed)."""
    if EXPERIMENTS["kept"]:
        kept = os.path.join(EXPERIMENTS["kept"], os.path.relpath(path, EXPERIMENT_DIR))
        if os.path.isfile(kept):
            return kept
    return path


def kept_gradient_maps():
    """experiments.kept's gradient_maps folder when it holds the maps, else None."""
    folder = os.path.join(EXPERIMENTS["kept"], "gradient_maps") if EXPERIMENTS["kept"] else None
    return folder if folder and os.path.isdir(folder) and os.listdir(folder) else None


def study_runs(study):
    """Every (variant, seed) metrics file of a study, in config order; its Mask R-CNN peers last. A run kept in
    experiments.kept is named by its kept copy."""
    runs = [(variant, f"{run_folder(study, variant, seed)}/test_metrics.json")
            for variant in STUDIES[study] for seed in EXPERIMENTS["seeds"]]
    runs += [(name, f"{EXPERIMENT_DIR}/peers/maskrcnn-{backbone}/seed{seed}/test_metrics.json")
             for name, (backbone, _) in experiment_peers(study).items() for seed in EXPERIMENTS["seeds"]]
    return [(name, kept_or_run(path)) for name, path in runs]


# The VOC pseudo-label protocol (voc_protocol.smk)
VOC_PROTOCOL = WSSS["voc_protocol"]
VOC_DIR = f"{RESULTS}/voc_protocol"
VOC_SPLIT_IDS = f"{DATA['voc_root']}/ImageSets/Segmentation/{VOC_PROTOCOL['split']}.txt"
# NAME -> folder of saliency maps of the split's images; the oracle's are made from the class masks
SALIENCY_SOURCES = {**({"oracle": f"{VOC_DIR}/oracle_saliency"} if VOC_PROTOCOL["oracle_saliency"] else {}),
                    **VOC_PROTOCOL["saliency_maps"]}
SALIENCY_CUES = [cue for cue in CUES if cue in ("saliency", "cam_saliency")]
# every labeller: a cue on S4Net, or cue+NAME (a saliency cue on the maps of NAME)
VOC_LABELLERS = CUES + [f"{cue}+{name}" for name in SALIENCY_SOURCES for cue in SALIENCY_CUES]
VOC_LABELLER_PATTERN = "|".join(re.escape(name) for name in VOC_LABELLERS)


def labeller_cue(labeller):
    """The cue of ``cue`` or ``cue+NAME``."""
    return labeller.partition("+")[0]


def labeller_maps(labeller):
    """The saliency-map folder of ``cue+NAME``, or None for a cue on S4Net."""
    source = labeller.partition("+")[2]
    return SALIENCY_SOURCES[source] if source else None


def voc_labeller_inputs(wildcards):
    """S4Net (a cue on S4Net) or the saliency maps (cue+NAME), and the cue's own model."""
    cue, maps = labeller_cue(wildcards.labeller), labeller_maps(wildcards.labeller)
    inputs = cue_models(SimpleNamespace(cue=cue))
    if maps is None:
        inputs["checkpoint"] = rules.train_s4net.output.checkpoint
    else:
        inputs["maps"] = maps  # the oracle's are made by rule oracle_saliency
    return inputs


def voc_labeller_flags(wildcards, input):
    """--checkpoint, or --saliency-maps and its threshold; plus the cue's model flags."""
    cue, maps = labeller_cue(wildcards.labeller), labeller_maps(wildcards.labeller)
    source = (f"--checkpoint {shlex.quote(input.checkpoint)}" if maps is None else
              f"--saliency-maps {shlex.quote(maps)} --saliency-threshold {VOC_PROTOCOL['saliency_threshold']}")
    return f"{source} {cue_model_flags(SimpleNamespace(cue=cue), input)}"
