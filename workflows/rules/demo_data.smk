rule demo_data:
    """The synthetic salient world (COCO salient instances, ImageNet subset, VOC 2012): the demo's every input."""
    output:
        world=WORLD,
    benchmark:
        f"{RESULTS}/benchmarks/demo_data.tsv"
    log:
        f"{RESULTS}/logs/demo_data.log",
    params:
        out=lambda wildcards, output: os.path.dirname(output.world),
        seed=SEED,
        scale=DEMO_SCALE,
    threads: JOBS["demo_data"]["threads"]
    resources:
        **job_resources("demo_data", gpus="none"),
    shell:
        "wsss demo-data --out {params.out:q} --seed {params.seed} --scale {params.scale} "
        "--workers {threads} --overwrite --quiet > {log:q} 2>&1"
