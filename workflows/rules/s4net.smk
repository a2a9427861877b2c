rule train_s4net:
    """S4Net on the salient-instance train set (resumes from its last checkpoint)."""
    input:
        world=rules.demo_data.output.world,
        model_config=S4NET["model_config"],
    output:
        checkpoint=f"{RESULTS}/s4net/model_final.pt",  # metrics.jsonl and checkpoints/ are not outputs: a rerun resumes from them
    benchmark:
        f"{RESULTS}/benchmarks/train_s4net.tsv"
    log:
        f"{RESULTS}/logs/train_s4net.log",
    params:
        out=lambda wildcards, output: os.path.dirname(output.checkpoint),
        annotations=f"{RESULTS}/data/salient/train.json",
        images=f"{RESULTS}/data/salient/images",
        seed=SEED,
        size=S4NET["size"],
        iterations=S4NET["iterations"],
        batch_size=S4NET["batch_size"],
        lr=S4NET["lr"],
        lr_steps=" ".join(str(s) for s in S4NET["lr_steps"]),
        warmup=S4NET["warmup"],
        grad_clip=S4NET["grad_clip"],
        cpu_bf16=S4NET["cpu_bf16"],
        scale_jitter=("--scale-jitter " + " ".join(str(s) for s in S4NET["scale_jitter"])) if S4NET["scale_jitter"] else "",
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "s4net train --annotations {params.annotations:q} --images {params.images:q} --out {params.out:q} "
        "--model-config {input.model_config:q} --size {params.size} --iterations {params.iterations} "
        "--batch-size {params.batch_size} --lr {params.lr} --lr-steps {params.lr_steps} --warmup {params.warmup} "
        "--grad-clip {params.grad_clip} --cpu-bf16 {params.cpu_bf16} {params.scale_jitter} --checkpoint-every 100 --seed {params.seed} --cache --quiet > {log:q} 2>&1"


rule evaluate_s4net:
    """Mask mAP@0.5/0.7 on the salient test set, all images and the occluded subset."""
    input:
        checkpoint=rules.train_s4net.output.checkpoint,
    output:
        metrics=f"{RESULTS}/s4net/test_metrics.json",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_s4net.tsv"
    log:
        f"{RESULTS}/logs/evaluate_s4net.log",
    params:
        annotations=f"{RESULTS}/data/salient/test.json",
        images=f"{RESULTS}/data/salient/images",
    threads: 2
    resources:
        mem_mb=4000,
        runtime=20,
    shell:
        "s4net evaluate --checkpoint {input.checkpoint:q} --annotations {params.annotations:q} "
        "--images {params.images:q} --out {output.metrics:q} --quiet > {log:q} 2>&1"
