"""The SLURM profile routes every job that may ask for a GPU to the GPU partition, and no other job.

The rules that can request a GPU are read from the workflow itself (every rule of every rule file, parsed by
Snakemake with one GPU configured), not listed here, so a rule added later cannot slip past the profile.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "workflows" / "profiles" / "slurm" / "config.yaml"
CONFIGS = REPO / "workflows" / "configs"
# the workflow configs (the other yaml files in workflows/configs are model configs and the paper's tables); with
# them every rule file is included at least once (checked below)
WORKFLOW_CONFIGS = ("demo.yaml", "experiments.yaml", "full.yaml", "realphoto.yaml")
# full.yaml names no data; any path parses (nothing is planned, so nothing is looked for)
PLACEHOLDER_DATA = {key: f"/placeholder/{key}" for key in
                    ("salient_train", "salient_test", "salient_images", "imagenet", "voc_root")}

# Parses the workflow with each config given and prints, per config, every rule's gpu and gres and its own
# slurm_partition (None when unset; "<function>" for a resource computed per job), and the files it included.
RULES_SCRIPT = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, Quietness, ResourceSettings

repo, overrides, configs = Path(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3:]

def plain(resource):
    if resource is None:
        return None
    return "<function>" if resource.is_evaluable() else resource.value

found = {}
for configfile in configs:
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow = api.workflow(ResourceSettings(), ConfigSettings(configfiles=[Path(configfile)], config=overrides),
                                snakefile=repo / "Snakefile", workdir=repo)._workflow
        found[configfile] = {
            "rules": {rule.name: {key: plain(rule.resources.get(key)) for key in ("gpu", "gres", "slurm_partition")}
                      for rule in workflow.rules},
            "included": sorted(str(path) for path in workflow.included),
        }
print(json.dumps(found))
"""


def workflow_rules(tmp_path: Path) -> dict[str, dict]:
    """Per workflow config: rule name -> its gpu/gres/slurm_partition resources, and the files it included."""
    overrides = {"gpus": 1, "results": str(tmp_path / "out"), "data": PLACEHOLDER_DATA}
    result = subprocess.run([sys.executable, "-c", RULES_SCRIPT, str(REPO), json.dumps(overrides),
                             *(str(CONFIGS / name) for name in WORKFLOW_CONFIGS)],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def may_use_gpu(resources: dict) -> bool:
    """Whether a rule's resources can ask for a GPU: a gpu count above 0, one computed per job, or a gpu gres."""
    gpu, gres = resources["gpu"], resources["gres"]
    if gpu == "<function>" or gres == "<function>":
        return True
    return (gpu is not None and int(gpu) > 0) or (isinstance(gres, str) and "gpu" in gres)


def test_every_rule_that_may_use_a_gpu_goes_to_the_gpu_partition(tmp_path: Path) -> None:
    parsed = workflow_rules(tmp_path)
    included = {Path(path).resolve() for config in parsed.values() for path in config["included"]}
    rule_files = set((REPO / "workflows" / "rules").glob("*.smk"))
    assert rule_files <= included, f"no workflow config includes {sorted(map(str, rule_files - included))}"

    profile = yaml.safe_load(PROFILE.read_text())
    per_rule = profile.get("set-resources", {})
    default_partition = profile["default-resources"]["slurm_partition"]
    partitions: dict[str, str] = {}  # rule -> the partition its jobs are submitted to
    gpu_rules: set[str] = set()
    for config in parsed.values():
        for rule, resources in config["rules"].items():
            partitions[rule] = per_rule.get(rule, {}).get("slurm_partition",
                                                         resources["slurm_partition"] or default_partition)
            if may_use_gpu(resources):
                gpu_rules.add(rule)

    # the 12 today: the trainers, the evaluations, the instance classifier, proxy labels, the gradient maps
    assert {"train_s4net", "train_cam", "train_segmenter", "experiment_train", "experiment_peer_train"} <= gpu_rules
    wrong = sorted(rule for rule in gpu_rules if partitions[rule] == default_partition)
    assert not wrong, f"these rules may ask for --gpus but go to the CPU partition {default_partition!r}: {wrong}"
    gpu_partitions = {partitions[rule] for rule in gpu_rules}
    assert len(gpu_partitions) == 1, f"GPU rules spread over partitions: {gpu_partitions}"
    (gpu_partition,) = gpu_partitions
    cpu_rules_on_gpus = sorted(rule for rule in set(partitions) - gpu_rules if partitions[rule] == gpu_partition)
    assert not cpu_rules_on_gpus, f"these rules need no GPU but take the GPU partition: {cpu_rules_on_gpus}"
    unknown = sorted(set(per_rule) - set(partitions))
    assert not unknown, f"set-resources names rules the workflow does not have: {unknown}"
