# Root of the S4Net-cue WSSS workflow. Rules live in workflows/rules/*.smk.
# Run:  snakemake --cores 2 --configfile workflows/configs/demo.yaml
# So far the DAG holds the demo data and S4Net training/evaluation; proxy labels,
# DeepLab and the report join it as they land (see DESIGN.md for the full data flow).

include: "workflows/rules/common.smk"
include: "workflows/rules/demo_data.smk"
include: "workflows/rules/s4net.smk"


rule all:
    input:
        rules.demo_data.output.world,
        rules.evaluate_s4net.output.metrics,
