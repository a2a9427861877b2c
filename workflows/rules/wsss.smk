localrules:
    gather_proxy_labels,  # a cat of a few files: not worth a cluster job
    provenance,


rule instance_classifier:
    """The classifier that names the instances of multi-keyword images (trained on single-keyword ones)."""
    input:
        data_input("imagenet", "keywords"),
        checkpoint=rules.train_s4net.output.checkpoint,
    output:
        classifier=f"{RESULTS}/proxy/instance_classifier.pt",
    priority: 40  # on the way from S4Net to the segmenters (train_s4net 50, proxy_labels 30, train_segmenter 20)
    benchmark:
        f"{RESULTS}/benchmarks/instance_classifier.tsv"
    log:
        f"{RESULTS}/logs/instance_classifier.log",
    params:
        images=DATA["imagenet"],
        keywords=DATA["keywords"],
        seed=SEED,
        score_threshold=WSSS["score_threshold"],
        device=DEVICE,
    threads: JOBS["instance_classifier"]["threads"]
    resources:
        **job_resources("instance_classifier", gpus="single"),
    shell:
        launch_single("instance_classifier")
        + "wsss instance-classifier --checkpoint {input.checkpoint:q} --images {params.images:q} "
        "--keywords {params.keywords:q} --out {output.classifier:q} --seed {params.seed} "
        "--score-threshold {params.score_threshold} --device {params.device} --quiet > {log:q} 2>&1"


rule train_cam:
    """The keyword classifier whose class activation maps split the saliency foreground (cue cam_saliency)."""
    input:
        data_input("imagenet", "keywords"),
        **weights_input("pretrained", WSSS["cam"]["pretrained"]),
    output:
        cam=f"{RESULTS}/proxy/cam_classifier/cam.pt",
    benchmark:
        f"{RESULTS}/benchmarks/train_cam.tsv"
    log:
        f"{RESULTS}/logs/train_cam.log",
    params:
        images=DATA["imagenet"],
        keywords=DATA["keywords"],
        out=lambda wildcards, output: os.path.dirname(output.cam),
        pretrained=optional_flag("--pretrained", WSSS["cam"]["pretrained"]),
        seed=SEED,
        device=DEVICE,
        **{key: value for key, value in WSSS["cam"].items() if key not in ("pretrained", "threshold")},
    threads: JOBS["train_cam"]["threads"]
    resources:
        **job_resources("train_cam", gpus="training"),
    shell:
        LAUNCH_TRAINING
        + "wsss train-cam --images {params.images:q} --keywords {params.keywords:q} --out {params.out:q} "
        "--backbone {params.backbone} {params.pretrained} --size {params.size} --iterations {params.iterations} "
        "--batch-size {params.batch_size} --lr {params.lr} --seed {params.seed} --device {params.device} "
        "--cpu-bf16 {params.cpu_bf16} --quiet > {log:q} 2>&1"


rule proxy_labels:
    """One shard of the proxy labels of one cue (resumable; see `wsss proxy-labels`)."""
    input:
        data_input("imagenet", "keywords"),
        unpack(cue_models),
        checkpoint=rules.train_s4net.output.checkpoint,
    output:
        # written last; the shard's manifest is not an output, so a rerun after a kill resumes from it
        summary=f"{RESULTS}/proxy/{{cue}}/{SHARD_SUMMARY}",
    priority: 30
    benchmark:
        f"{RESULTS}/benchmarks/proxy_labels_{{cue}}{SHARD_SUFFIX}.tsv"
    log:
        f"{RESULTS}/logs/proxy_labels_{{cue}}{SHARD_SUFFIX}.log",
    wildcard_constraints:
        cue=CUE_PATTERN,
        shard=r"\d+",
    params:
        images=DATA["imagenet"],
        keywords=DATA["keywords"],
        out=lambda wildcards: f"{RESULTS}/proxy/{wildcards.cue}",
        shard=lambda wildcards: f"{getattr(wildcards, 'shard', 0)}/{SHARDS}",
        crf="--crf" if WSSS["crf"] else "",
        models=cue_model_flags,
        score_threshold=WSSS["score_threshold"],
        device=DEVICE,
    threads: JOBS["proxy_labels"]["threads"]
    resources:
        **job_resources("proxy_labels", gpus="single"),
    shell:
        launch_single("proxy_labels", PROXY_LABELS_GPU_ADVICE)
        + "wsss proxy-labels --checkpoint {input.checkpoint:q} {params.models} "
        "--images {params.images:q} --keywords {params.keywords:q} --out {params.out:q} --cue {wildcards.cue} "
        "--shard {params.shard} --workers {threads} {params.crf} "
        "--score-threshold {params.score_threshold} --device {params.device} --quiet > {log:q} 2>&1"


rule gather_proxy_labels:
    """All shards of one cue: their manifests in one file (the labels already share one folder)."""
    input:
        lambda wildcards: shard_files(Shard.summary_name_for, wildcards.cue),
    output:
        manifest=f"{RESULTS}/proxy/{{cue}}/manifest.gathered.jsonl",
    priority: 30  # a segmenter waits on it
    wildcard_constraints:
        cue=CUE_PATTERN,
    log:
        f"{RESULTS}/logs/gather_proxy_labels_{{cue}}.log",
    params:
        manifests=lambda wildcards: shard_files(Shard.manifest_name_for, wildcards.cue),
    shell:
        "(cat {params.manifests:q} > {output.manifest:q}.tmp && mv {output.manifest:q}.tmp {output.manifest:q}) > {log:q} 2>&1"


rule train_segmenter:
    """DeepLab on one label source: a cue's proxy labels, or the fully supervised reference."""
    input:
        segmenter_labels,
        **weights_input("encoder_weights", WSSS["segmenter"]["encoder_weights"]),
    output:
        checkpoint=f"{RESULTS}/segmenter/{{source}}/model_final.pt",
    priority: 20
    benchmark:
        f"{RESULTS}/benchmarks/train_segmenter_{{source}}.tsv"
    log:
        f"{RESULTS}/logs/train_segmenter_{{source}}.log",
    wildcard_constraints:
        source=f"{CUE_PATTERN}|ground_truth",
    params:
        data=lambda wildcards: segmenter_data(wildcards.source),
        out=lambda wildcards, output: os.path.dirname(output.checkpoint),
        seed=SEED,
        device=DEVICE,
        workers=lambda wildcards, threads: threads if GPUS else 0,  # on CPU every core computes
        encoder_weights=optional_flag("--encoder-weights", WSSS["segmenter"]["encoder_weights"]),
        **{key: value for key, value in WSSS["segmenter"].items() if key != "encoder_weights"},
    threads: JOBS["train_segmenter"]["threads"]
    resources:
        **job_resources("train_segmenter", gpus="training"),
    shell:
        LAUNCH_TRAINING
        + "wsss train-segmenter {params.data} --out {params.out:q} "
        "--arch {params.arch} --encoder {params.encoder} {params.encoder_weights} --iterations {params.iterations} "
        "--batch-size {params.batch_size} --crop {params.crop} --lr {params.lr} --seed {params.seed} "
        "--device {params.device} --cpu-bf16 {params.cpu_bf16} --workers {params.workers} --quiet > {log:q} 2>&1"


rule evaluate_segmenter:
    """mIoU on the VOC val split, plain and with wsss.evaluation's augmentation (and the primary's label PNGs)."""
    input:
        data_input("voc_root"),
        checkpoint=rules.train_segmenter.output.checkpoint,
    output:
        metrics=f"{RESULTS}/segmenter/{{source}}/val_metrics.json",
        predictions=directory(f"{RESULTS}/segmenter/{{source}}/predictions"),
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_segmenter_{{source}}.tsv"
    log:
        f"{RESULTS}/logs/evaluate_segmenter_{{source}}.log",
    wildcard_constraints:
        source=f"{CUE_PATTERN}|ground_truth",
    params:
        voc=DATA["voc_root"],
        split=DATA["val_split"],
        device=DEVICE,
        augmentation=" ".join(
            ["--scales"] + [str(scale) for scale in WSSS["evaluation"]["scales"]]
            + (["--flip"] if WSSS["evaluation"]["flip"] else []) + (["--crf"] if WSSS["evaluation"]["crf"] else [])
        ),
    threads: JOBS["evaluate_segmenter"]["threads"]
    resources:
        **job_resources("evaluate_segmenter", gpus="single"),
    shell:
        launch_single("evaluate_segmenter")
        + "wsss evaluate --checkpoint {input.checkpoint:q} --voc-root {params.voc:q} --split {params.split} "
        "{params.augmentation} --save-predictions {output.predictions:q} --device {params.device} "
        "--out {output.metrics:q} --quiet > {log:q} 2>&1"


rule score_proxy_labels:
    """Proxy labels against the ImageNet images' own class masks (known for the synthetic world; data.proxy_gt elsewhere)."""
    input:
        manifest=rules.gather_proxy_labels.output.manifest,
    output:
        scores=f"{RESULTS}/proxy/{{cue}}/scores.json",
    benchmark:
        f"{RESULTS}/benchmarks/score_proxy_labels_{{cue}}.tsv"
    log:
        f"{RESULTS}/logs/score_proxy_labels_{{cue}}.log",
    wildcard_constraints:
        cue=CUE_PATTERN,
    params:
        labels=lambda wildcards: f"{RESULTS}/proxy/{wildcards.cue}/labels",
        gt=DATA["proxy_gt"],
    threads: JOBS["light"]["threads"]
    resources:
        **job_resources("light", gpus="none"),
    shell:
        "wsss score --pred {params.labels:q} --gt {params.gt:q} --out {output.scores:q} > {log:q} 2>&1"
