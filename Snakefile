# Root of the S4Net-cue WSSS workflow. Rules live in workflows/rules/*.smk.
# Run:     snakemake --profile workflows/profiles/local --configfile workflows/configs/demo.yaml
# Report:  snakemake --configfile workflows/configs/demo.yaml --report report.html
# The DAG: inputs (the demo's synthetic world, or real data) -> S4Net training/evaluation ->
# proxy labels (sharded, gathered) -> DeepLab per label source -> VOC val mIoU -> report; beside it the
# field's pseudo-label yardstick: proxy labels of VOC train from its tags, scored (voc_protocol.smk).

include: "workflows/rules/common.smk"

report: "workflows/report/workflow.rst"

include: "workflows/rules/provenance.smk"


if SETTINGS["realphoto"]["enabled"]:  # workflows/configs/realphoto.yaml: the real-photo run alone
    include: "workflows/rules/realphoto.smk"

    rule all:
        input:
            rules.realphoto.output.summary,

else:
    if DEMO:
        include: "workflows/rules/demo_data.smk"
    elif not SETTINGS["data"]["keywords"]:
        include: "workflows/rules/data.smk"
    include: "workflows/rules/s4net.smk"
    include: "workflows/rules/wsss.smk"
    include: "workflows/rules/voc_protocol.smk"
    include: "workflows/rules/report.smk"
    include: "workflows/rules/experiments.smk"

    rule all:  # the default target; the ablations run with `snakemake experiments`
        input:
            rules.report.output.summary,
            rules.provenance.output.settings,
            rules.voc_pseudo_labels.output.summary if VOC_PROTOCOL["enabled"] else [],
