# Root of the S4Net-cue WSSS workflow. Rules live in workflows/rules/*.smk.
# Run:  snakemake --cores 2 --configfile workflows/configs/demo.yaml
# The DAG: demo data -> S4Net training/evaluation -> proxy labels (sharded) -> DeepLab -> VOC val
# mIoU, for each cue (and the ground-truth reference) switched on in the config. The report and
# the cluster profiles are next.

include: "workflows/rules/common.smk"
include: "workflows/rules/demo_data.smk"
include: "workflows/rules/s4net.smk"
include: "workflows/rules/wsss.smk"


rule all:
    input:
        rules.demo_data.output.world,
        rules.evaluate_s4net.output.metrics,
        expand(rules.score_proxy_labels.output.scores, cue=WSSS["cues"]),
        expand(rules.evaluate_segmenter.output.metrics, source=SOURCES),
        rules.provenance.output.settings,
