# Root of the S4Net-cue WSSS workflow. Rules live in workflows/rules/*.smk.
# Run:  snakemake --cores 2 --configfile workflows/configs/demo.yaml
# So far the DAG holds the demo-data step; training, proxy labels, DeepLab and the
# report join it as they land (see DESIGN.md for the full data flow).

include: "workflows/rules/common.smk"
include: "workflows/rules/demo_data.smk"


rule all:
    input:
        rules.demo_data.output.world,
