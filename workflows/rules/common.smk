# Parameters read from the config in one place; defaults and checks in workflows/schemas/config.schema.yaml.
import json
import os

import yaml
from snakemake.utils import validate

SCHEMA = os.path.join(workflow.basedir, "workflows", "schemas", "config.schema.yaml")
validate(config, SCHEMA)  # a wrong key or type stops here, before any job, naming it


def schema_defaults(node):
    """The ``default`` of every property of a schema node, nested objects included."""
    if node.get("type") != "object":
        return node.get("default")
    return {key: schema_defaults(child) for key, child in node.get("properties", {}).items()}


def merged(defaults, given):
    """``given`` over ``defaults``, key by key inside nested dicts."""
    if not isinstance(defaults, dict) or not isinstance(given, dict):
        return given
    return {key: merged(defaults.get(key), given[key]) if key in given else value for key, value in defaults.items()}


with open(SCHEMA) as handle:
    SETTINGS = merged(schema_defaults(yaml.safe_load(handle)), config)

RESULTS = SETTINGS["results"]
SEED = SETTINGS["seed"]
DEMO_SCALE = SETTINGS["demo_scale"]
S4NET = SETTINGS["s4net"]
WSSS = SETTINGS["wsss"]
SHARDS = WSSS["shards"]
# how `wsss proxy-labels --shard I/N` names its manifest and summary (pipeline.proxy_labels.Shard.suffix)
SHARD_SUFFIX = f".shard-{{shard}}-of-{SHARDS}" if SHARDS > 1 else ""
SOURCES = list(WSSS["cues"]) + (["ground_truth"] if WSSS["reference"] else [])
IMAGENET = f"{RESULTS}/data/imagenet"
VOC_ROOT = f"{RESULTS}/data/voc/VOC2012"
