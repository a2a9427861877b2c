# The real-photo run (workflows/configs/realphoto.yaml, `realphoto.enabled: true`; it replaces the default target):
# S4Net-Lite0 (EfficientNet-Lite0 from the packaged ImageNet weights: a deviation from the paper's ResNet) trained on
# the real salient photos of realdata (SOD photos' mask components, COCO instances; every VOC image kept out), then
# the VOC pseudo-label protocol on the 16 real VOC images (tags from their masks) by every labeller, beside trivial
# baselines and, when given, another S4Net (the demo's synthetic-trained one); salient-object IoU on held-out SOD
# photos beside the centred-box prior. One summary (json, Markdown, a label sheet) under RESULTS/report.

REAL = SETTINGS["realphoto"]
REALDATA = REAL["realdata"]
REAL_VOC = f"{REALDATA}/voc2012_seg16"
REAL_VOC_IDS = f"{REAL_VOC}/ids.txt"
REAL_SOD = f"{REALDATA}/sod_bsds_saliency40"
REAL_IMAGENET = f"{REALDATA}/imagenet_voc_classes"
REAL_DATA_DIR = f"{RESULTS}/data"
REAL_VOC_DIR = f"{RESULTS}/voc16"
# The S4Net models scored: the one trained here, and the optional outside one (its proxy labels and SOD IoU only).
REAL_MODELS = ["lite0"] + (["baseline"] if REAL["baseline_s4net"] else [])
# Labellers of the 16 VOC images: a cue on one S4Net model (MODEL/cue), the ImageNet classifier's CAMs with no
# training (imagenet_cam, alone or fused with S4Net-Lite0's saliency), and the trivial baselines.
REAL_LABELLERS = (
    [f"{model}/{cue}" for model in REAL_MODELS for cue in ("instances", "saliency")]
    + ["lite0/cam_saliency", "lite0/imagenet_cam_saliency", "imagenet_cam", "whole_image", "centre_box"]
)
REAL_LABELLER_PATTERN = "|".join(re.escape(name) for name in REAL_LABELLERS)
REAL_SOD_SOURCES = [f"s4net_{model}" for model in REAL_MODELS] + ["centre_box_prior"]


def real_checkpoint(model):
    """The S4Net checkpoint of ``lite0`` (trained here) or ``baseline`` (the config's)."""
    return rules.realphoto_train_s4net.output.checkpoint if model == "lite0" else REAL["baseline_s4net"]


def real_labeller_inputs(wildcards):
    """The files one labeller reads besides the tags: its S4Net, instance classifier and CAM."""
    model, _, cue = wildcards.labeller.rpartition("/")
    if not model:
        return {}
    inputs = {"checkpoint": real_checkpoint(model)}
    if cue == "instances":
        inputs["classifier"] = f"{RESULTS}/{model}/instance_classifier.pt"
    if cue == "cam_saliency":
        inputs["cam"] = rules.realphoto_train_cam.output.cam
    return inputs


def real_labeller_command(wildcards, input, output):
    """The `wsss` command line that writes one labeller's labels of the VOC images under LABELLER/labels."""
    out = os.path.dirname(output.done)
    images, tags = shlex.quote(f"{REAL_VOC}/JPEGImages"), shlex.quote(input.tags)
    model, _, cue = wildcards.labeller.rpartition("/")
    if cue in ("whole_image", "centre_box"):
        return (f"wsss baseline-labels --kind {cue.replace('_', '-')} --voc-root {shlex.quote(REAL_VOC)} "
                f"--tags {tags} --ids {shlex.quote(REAL_VOC_IDS)} --out {shlex.quote(out + '/labels')}")
    common = f"wsss proxy-labels --images {images} --keywords {tags} --out {shlex.quote(out)} --device {DEVICE} -q"
    if cue == "imagenet_cam":
        return f"{common} --cue cam --cam imagenet"
    common += f" --score-threshold {WSSS['score_threshold']}"
    flags = f"--checkpoint {shlex.quote(input.checkpoint)}"
    if cue == "instances":
        return f"{common} --cue instances {flags} --classifier {shlex.quote(input.classifier)}"
    if cue == "saliency":
        return f"{common} --cue saliency {flags}"
    if cue == "cam_saliency":
        return f"{common} --cue cam_saliency {flags} --cam {shlex.quote(input.cam)}"
    return f"{common} --cue cam_saliency {flags} --cam imagenet"  # imagenet_cam_saliency


rule realphoto_data:
    """The real salient-instance training set (COCO json over the realdata folders; no VOC image) and the held-out
    SOD photos (val.json for s4net evaluate, heldout_sod.txt for wsss sod-iou)."""
    input:
        REALDATA,
    output:
        train=f"{REAL_DATA_DIR}/train.json",
        holdout=f"{REAL_DATA_DIR}/val.json",
        holdout_ids=f"{REAL_DATA_DIR}/heldout_sod.txt",
        summary=f"{REAL_DATA_DIR}/summary.json",
    benchmark:
        f"{RESULTS}/benchmarks/realphoto_data.tsv"
    log:
        f"{RESULTS}/logs/realphoto_data.log",
    params:
        out=REAL_DATA_DIR,
        holdout=REAL["holdout_sod"],
        seed=SEED,
    threads: JOBS["light"]["threads"]
    resources:
        **job_resources("light", gpus="none"),
    shell:
        "wsss realphoto-data --realdata {input:q} --out {params.out:q} --holdout-sod {params.holdout} "
        "--seed {params.seed} --quiet > {log:q} 2>&1"


rule realphoto_keywords:
    """Keywords of the real ImageNet samples from their wnid file names (the shipped wnid -> VOC map)."""
    input:
        REAL_IMAGENET,
    output:
        keywords=f"{REAL_DATA_DIR}/imagenet_keywords.csv",
    log:
        f"{RESULTS}/logs/realphoto_keywords.log",
    threads: JOBS["light"]["threads"]
    resources:
        **job_resources("light", gpus="none"),
    shell:
        "wsss keywords --images {input:q} --layout file-names --out {output.keywords:q} > {log:q} 2>&1"


rule realphoto_train_s4net:
    """S4Net-Lite0 from the packaged ImageNet weights on the real salient photos (resumes from its checkpoint)."""
    input:
        train=rules.realphoto_data.output.train,
        model_config=REAL["model_config"],
    output:
        checkpoint=f"{RESULTS}/lite0/s4net/model_final.pt",
    benchmark:
        f"{RESULTS}/benchmarks/realphoto_train_s4net.tsv"
    log:
        f"{RESULTS}/logs/realphoto_train_s4net.log",
    params:
        out=lambda wildcards, output: os.path.dirname(output.checkpoint),
        images=REALDATA,
        seed=SEED,
        size=REAL["size"],
        iterations=REAL["iterations"],
        batch_size=REAL["batch_size"],
        lr=REAL["lr"],
        lr_steps=" ".join(str(s) for s in REAL["lr_steps"]),
        warmup=REAL["warmup"],
        scale_jitter=(f"--scale-jitter {REAL['scale_jitter'][0]} {REAL['scale_jitter'][1]}"
                      if REAL["scale_jitter"] else ""),
        checkpoint_every=REAL["checkpoint_every"],
        device=DEVICE,
        workers=lambda wildcards, threads: threads if GPUS else 0,
    threads: JOBS["train_s4net"]["threads"]
    resources:
        **job_resources("train_s4net", gpus="training"),
    shell:
        LAUNCH_TRAINING
        + "s4net train --annotations {input.train:q} --images {params.images:q} --out {params.out:q} "
        "--model-config {input.model_config:q} --pretrained package --size {params.size} "
        "--iterations {params.iterations} --batch-size {params.batch_size} --lr {params.lr} "
        "--lr-steps {params.lr_steps} --warmup {params.warmup} {params.scale_jitter} --grad-clip 5 --cache "
        "--checkpoint-every {params.checkpoint_every} --seed {params.seed} --device {params.device} "
        "--workers {params.workers} --quiet > {log:q} 2>&1"


rule realphoto_evaluate_s4net:
    """S4Net-Lite0's mask mAP@0.5/0.7 on the held-out SOD photos' instances (their mask components)."""
    input:
        checkpoint=rules.realphoto_train_s4net.output.checkpoint,
        holdout=rules.realphoto_data.output.holdout,
    output:
        metrics=f"{RESULTS}/lite0/s4net/test_metrics.json",
    benchmark:
        f"{RESULTS}/benchmarks/realphoto_evaluate_s4net.tsv"
    log:
        f"{RESULTS}/logs/realphoto_evaluate_s4net.log",
    params:
        images=REALDATA,
        device=DEVICE,
    threads: JOBS["evaluate_s4net"]["threads"]
    resources:
        **job_resources("evaluate_s4net", gpus="single"),
    shell:
        launch_single("realphoto_evaluate_s4net")
        + "s4net evaluate --checkpoint {input.checkpoint:q} --annotations {input.holdout:q} --images {params.images:q} "
        "--out {output.metrics:q} --device {params.device} --quiet > {log:q} 2>&1"


rule realphoto_sod_iou:
    """Salient-object IoU on the held-out SOD photos: an S4Net's saliency, or the centred-box prior."""
    input:
        ids=rules.realphoto_data.output.holdout_ids,
        checkpoint=lambda wildcards: ([real_checkpoint(wildcards.source.removeprefix("s4net_"))]
                                      if wildcards.source.startswith("s4net_") else []),
    output:
        iou=f"{RESULTS}/sod_iou/{{source}}.json",
    benchmark:
        f"{RESULTS}/benchmarks/realphoto_sod_iou/{{source}}.tsv"
    log:
        f"{RESULTS}/logs/realphoto_sod_iou_{{source}}.log",
    wildcard_constraints:
        source="|".join(REAL_SOD_SOURCES),
    params:
        model=lambda wildcards, input: (f"--checkpoint {shlex.quote(input.checkpoint[0])} "
                                        f"--score-threshold {WSSS['score_threshold']}" if input.checkpoint
                                        else "--prior centre-box"),
        images=f"{REAL_SOD}/images",
        masks=f"{REAL_SOD}/masks",
        device=DEVICE,
    threads: JOBS["evaluate_s4net"]["threads"]
    resources:
        **job_resources("evaluate_s4net", gpus="single"),
    shell:
        launch_single("realphoto_sod_iou")
        + "wsss sod-iou {params.model} --images {params.images:q} --masks {params.masks:q} --ids {input.ids:q} "
        "--out {output.iou:q} --device {params.device} > {log:q} 2>&1"


rule realphoto_voc_tags:
    """Tags of the 16 real VOC images, from their class masks (they have no XML)."""
    input:
        REAL_VOC,
    output:
        tags=f"{REAL_VOC_DIR}/tags.csv",
    log:
        f"{RESULTS}/logs/realphoto_voc_tags.log",
    threads: JOBS["light"]["threads"]
    resources:
        **job_resources("light", gpus="none"),
    shell:
        "wsss voc-tags --voc-root {input:q} --ids {REAL_VOC_IDS:q} --source masks --out {output.tags:q} > {log:q} 2>&1"


rule realphoto_instance_classifier:
    """The instance classifier of one S4Net model, on the single-keyword ImageNet samples of realdata."""
    input:
        checkpoint=lambda wildcards: real_checkpoint(wildcards.model),
        keywords=rules.realphoto_keywords.output.keywords,
    output:
        classifier=f"{RESULTS}/{{model}}/instance_classifier.pt",
    benchmark:
        f"{RESULTS}/benchmarks/realphoto_instance_classifier/{{model}}.tsv"
    log:
        f"{RESULTS}/logs/realphoto_instance_classifier_{{model}}.log",
    wildcard_constraints:
        model="|".join(REAL_MODELS),
    params:
        images=REAL_IMAGENET,
        seed=SEED,
        score_threshold=WSSS["score_threshold"],
        device=DEVICE,
    threads: JOBS["instance_classifier"]["threads"]
    resources:
        **job_resources("instance_classifier", gpus="single"),
    shell:
        launch_single("realphoto_instance_classifier")
        + "wsss instance-classifier --checkpoint {input.checkpoint:q} --images {params.images:q} "
        "--keywords {input.keywords:q} --out {output.classifier:q} --seed {params.seed} "
        "--score-threshold {params.score_threshold} --device {params.device} "
        "--quiet > {log:q} 2>&1"


rule realphoto_train_cam:
    """A CAM classifier from the packaged EfficientNet-Lite0 weights, trained on the ImageNet samples' keywords."""
    input:
        keywords=rules.realphoto_keywords.output.keywords,
    output:
        cam=f"{RESULTS}/lite0/cam/cam.pt",
    benchmark:
        f"{RESULTS}/benchmarks/realphoto_train_cam.tsv"
    log:
        f"{RESULTS}/logs/realphoto_train_cam.log",
    params:
        images=REAL_IMAGENET,
        out=lambda wildcards, output: os.path.dirname(output.cam),
        iterations=REAL["cam_iterations"],
        seed=SEED,
        device=DEVICE,
    threads: JOBS["train_cam"]["threads"]
    resources:
        **job_resources("train_cam", gpus="training"),
    shell:
        LAUNCH_TRAINING
        + "wsss train-cam --images {params.images:q} --keywords {input.keywords:q} --out {params.out:q} "
        "--backbone efficientnet_lite0 --pretrained package --iterations {params.iterations} --holdout 0 "
        "--seed {params.seed} --device {params.device} --quiet > {log:q} 2>&1"


rule realphoto_labels:
    """One labeller's proxy labels of the 16 real VOC images, from their tags."""
    input:
        unpack(real_labeller_inputs),
        tags=rules.realphoto_voc_tags.output.tags,
    output:
        done=f"{REAL_VOC_DIR}/{{labeller}}/done.json",
    benchmark:
        f"{RESULTS}/benchmarks/realphoto_labels/{{labeller}}.tsv"
    log:
        f"{RESULTS}/logs/realphoto_labels/{{labeller}}.log",
    wildcard_constraints:
        labeller=REAL_LABELLER_PATTERN,
    params:
        command=real_labeller_command,
        labels=lambda wildcards, output: f"{os.path.dirname(output.done)}/labels",
    threads: JOBS["proxy_labels"]["threads"]
    resources:
        **job_resources("proxy_labels", gpus="single"),
    shell:
        "{params.command} > {log:q} 2>&1 && test -d {params.labels:q} && echo '{{}}' > {output.done:q}"


rule realphoto_score:
    """One labeller's labels of the 16 VOC images against their masks."""
    input:
        done=rules.realphoto_labels.output.done,
    output:
        scores=f"{REAL_VOC_DIR}/{{labeller}}/scores.json",
    log:
        f"{RESULTS}/logs/realphoto_score/{{labeller}}.log",
    wildcard_constraints:
        labeller=REAL_LABELLER_PATTERN,
    params:
        labels=lambda wildcards, input: f"{os.path.dirname(input.done)}/labels",
        gt=f"{REAL_VOC}/SegmentationClass",
        ids=REAL_VOC_IDS,
    threads: JOBS["light"]["threads"]
    resources:
        **job_resources("light", gpus="none"),
    shell:
        "wsss score --pred {params.labels:q} --gt {params.gt:q} --ids {params.ids:q} --out {output.scores:q} "
        "> {log:q} 2>&1"


rule realphoto:
    """The real-photo summary: the VOC table by labeller, salient-object IoU, S4Net-Lite0's mAP, the label sheet."""
    input:
        scores=expand(rules.realphoto_score.output.scores, labeller=REAL_LABELLERS),
        sod=expand(rules.realphoto_sod_iou.output.iou, source=REAL_SOD_SOURCES),
        s4net=rules.realphoto_evaluate_s4net.output.metrics,
        data=rules.realphoto_data.output.summary,
        code=rules.provenance.output.code,
    output:
        summary=f"{RESULTS}/report/summary.json",
        sheet=f"{RESULTS}/report/label_sheet.jpg",
    log:
        f"{RESULTS}/logs/realphoto_report.log",
    params:
        scores=lambda wildcards, input: named(zip(REAL_LABELLERS, input.scores)),
        sod=lambda wildcards, input: named(zip(REAL_SOD_SOURCES, input.sod)),
        labels=named((name, f"{REAL_VOC_DIR}/{name}/labels") for name in REAL_LABELLERS),
        out=lambda wildcards, output: os.path.dirname(output.summary),
        voc=REAL_VOC,
        ids=REAL_VOC_IDS,
        benchmarks=f"{RESULTS}/benchmarks",
    threads: JOBS["light"]["threads"]
    resources:
        **job_resources("light", gpus="none"),
    shell:
        "wsss realphoto-report --scores {params.scores} --sod {params.sod} --s4net lite0={input.s4net:q} "
        "--labels {params.labels} --voc-root {params.voc:q} --ids {params.ids:q} --data {input.data:q} "
        "--benchmarks {params.benchmarks:q} --code {input.code:q} --out {params.out:q} > {log:q} 2>&1"
