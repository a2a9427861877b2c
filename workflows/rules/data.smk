# The real-data side of the inputs (demo_scale: null); the demo's come from rule demo_data.


rule imagenet_keywords:
    """The keyword table of the ImageNet subset, from its wnid folders and the shipped wnid -> VOC map."""
    input:
        imagenet=DATA["imagenet"],
    output:
        keywords=f"{RESULTS}/imagenet_keywords.csv",
    benchmark:
        f"{RESULTS}/benchmarks/imagenet_keywords.tsv"
    log:
        f"{RESULTS}/logs/imagenet_keywords.log",
    threads: JOBS["light"]["threads"]
    resources:
        **job_resources("light", gpus="none"),
    shell:
        "wsss keywords --images {input.imagenet:q} --out {output.keywords:q} > {log:q} 2>&1"
