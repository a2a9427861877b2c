rule train_s4net:
    """S4Net on the salient-instance train set (resumes from its last checkpoint)."""
    input:
        data_input("salient_train", "salient_images"),
        model_config=S4NET["model_config"],
        **weights_input("pretrained", S4NET["pretrained"]),
    output:
        checkpoint=f"{RESULTS}/s4net/model_final.pt",  # metrics.jsonl and checkpoints/ are not outputs: a rerun resumes from them
    # most of the DAG waits on it (the instance classifier, proxy labels, three segmenters): it starts first
    priority: 50
    benchmark:
        f"{RESULTS}/benchmarks/train_s4net.tsv"
    log:
        f"{RESULTS}/logs/train_s4net.log",
    params:
        out=lambda wildcards, output: os.path.dirname(output.checkpoint),
        annotations=DATA["salient_train"],
        images=DATA["salient_images"],
        seed=SEED,
        size=S4NET["size"],
        iterations=S4NET["iterations"],
        batch_size=S4NET["batch_size"],
        lr=S4NET["lr"],
        lr_steps=" ".join(str(s) for s in S4NET["lr_steps"]),
        warmup=S4NET["warmup"],
        grad_clip=S4NET["grad_clip"],
        checkpoint_every=S4NET["checkpoint_every"],
        cache="--cache" if S4NET["cache"] else "",
        cpu_bf16=S4NET["cpu_bf16"],
        scale_jitter=f"--scale-jitter {S4NET['scale_jitter'][0]} {S4NET['scale_jitter'][1]}" if S4NET["scale_jitter"] else "",
        device=DEVICE,
        workers=lambda wildcards, threads: threads if GPUS else S4NET["cpu_workers"],
        pretrained=optional_flag("--pretrained", S4NET["pretrained"]),  # an input too: a missing file stops the plan
    threads: JOBS["train_s4net"]["threads"]
    resources:
        **job_resources("train_s4net", gpus="training"),
    shell:
        LAUNCH_TRAINING
        + "s4net train --annotations {params.annotations:q} --images {params.images:q} --out {params.out:q} "
        "--model-config {input.model_config:q} {params.pretrained} --size {params.size} --iterations {params.iterations} "
        "--batch-size {params.batch_size} --lr {params.lr} --lr-steps {params.lr_steps} --warmup {params.warmup} "
        "--grad-clip {params.grad_clip} --cpu-bf16 {params.cpu_bf16} {params.scale_jitter} --checkpoint-every {params.checkpoint_every} "
        "--seed {params.seed} {params.cache} --device {params.device} --workers {params.workers} --quiet > {log:q} 2>&1"


rule evaluate_s4net:
    """Mask mAP@0.5/0.7 on the salient test set, all images and the occluded subset."""
    input:
        data_input("salient_test", "salient_images"),
        checkpoint=rules.train_s4net.output.checkpoint,
    output:
        metrics=f"{RESULTS}/s4net/test_metrics.json",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_s4net.tsv"
    log:
        f"{RESULTS}/logs/evaluate_s4net.log",
    params:
        annotations=DATA["salient_test"],
        images=DATA["salient_images"],
        device=DEVICE,
    threads: JOBS["evaluate_s4net"]["threads"]
    resources:
        **job_resources("evaluate_s4net", gpus="single"),
    shell:
        launch_single("evaluate_s4net")
        + "s4net evaluate --checkpoint {input.checkpoint:q} --annotations {params.annotations:q} "
        "--images {params.images:q} --out {output.metrics:q} --device {params.device} --quiet > {log:q} 2>&1"
