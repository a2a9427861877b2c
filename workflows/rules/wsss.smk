localrules:
    gather_proxy_labels,  # a cat of a few files: not worth a cluster job
    provenance,


rule instance_classifier:
    """The classifier that names the instances of multi-keyword images (trained on single-keyword ones)."""
    input:
        checkpoint=rules.train_s4net.output.checkpoint,
        world=rules.demo_data.output.world,
    output:
        classifier=f"{RESULTS}/proxy/instance_classifier.pt",
    benchmark:
        f"{RESULTS}/benchmarks/instance_classifier.tsv"
    log:
        f"{RESULTS}/logs/instance_classifier.log",
    params:
        images=IMAGENET,
        keywords=f"{IMAGENET}/keywords.csv",
        seed=SEED,
        score_threshold=WSSS["score_threshold"],
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "wsss instance-classifier --checkpoint {input.checkpoint:q} --images {params.images:q} "
        "--keywords {params.keywords:q} --out {output.classifier:q} --seed {params.seed} "
        "--score-threshold {params.score_threshold} --quiet > {log:q} 2>&1"


rule proxy_labels:
    """One shard of the proxy labels of one cue (resumable; see `wsss proxy-labels`)."""
    input:
        checkpoint=rules.train_s4net.output.checkpoint,
        classifier=rules.instance_classifier.output.classifier,
    output:
        # written last; the shard's manifest is not an output, so a rerun after a kill resumes from it
        summary=f"{RESULTS}/proxy/{{cue}}/summary{SHARD_SUFFIX}.json",
    benchmark:
        f"{RESULTS}/benchmarks/proxy_labels_{{cue}}{SHARD_SUFFIX}.tsv"
    log:
        f"{RESULTS}/logs/proxy_labels_{{cue}}{SHARD_SUFFIX}.log",
    wildcard_constraints:
        cue="instances|saliency",
        shard=r"\d+",
    params:
        images=IMAGENET,
        keywords=f"{IMAGENET}/keywords.csv",
        out=lambda wildcards: f"{RESULTS}/proxy/{wildcards.cue}",
        shard=lambda wildcards: f"{getattr(wildcards, 'shard', 0)}/{SHARDS}",
        crf="--crf" if WSSS["crf"] else "",
        score_threshold=WSSS["score_threshold"],
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "wsss proxy-labels --checkpoint {input.checkpoint:q} --classifier {input.classifier:q} "
        "--images {params.images:q} --keywords {params.keywords:q} --out {params.out:q} --cue {wildcards.cue} "
        "--shard {params.shard} --workers {threads} {params.crf} "
        "--score-threshold {params.score_threshold} --quiet > {log:q} 2>&1"


def shard_files(kind, extension, cue):
    """The manifest or summary of every shard of one cue."""
    pattern = f"{RESULTS}/proxy/{{cue}}/{kind}{SHARD_SUFFIX}.{extension}"
    return sorted(set(expand(pattern, cue=cue, shard=range(SHARDS))))


rule gather_proxy_labels:
    """All shards of one cue: their manifests in one file (the labels already share one folder)."""
    input:
        lambda wildcards: shard_files("summary", "json", wildcards.cue),
    output:
        manifest=f"{RESULTS}/proxy/{{cue}}/manifest.gathered.jsonl",
    wildcard_constraints:
        cue="instances|saliency",
    params:
        manifests=lambda wildcards: shard_files("manifest", "jsonl", wildcards.cue),
    shell:
        "cat {params.manifests:q} > {output.manifest:q}.tmp && mv {output.manifest:q}.tmp {output.manifest:q}"


def segmenter_labels(wildcards):
    """The label folder a segmenter trains on, and the file that says it is complete."""
    if wildcards.source == "ground_truth":
        return {"done": rules.demo_data.output.world}
    return {"done": f"{RESULTS}/proxy/{wildcards.source}/manifest.gathered.jsonl"}


rule train_segmenter:
    """DeepLab on one label source: a cue's proxy labels, or the ground truth of the same images."""
    input:
        unpack(segmenter_labels),
    output:
        checkpoint=f"{RESULTS}/segmenter/{{source}}/model_final.pt",
    benchmark:
        f"{RESULTS}/benchmarks/train_segmenter_{{source}}.tsv"
    log:
        f"{RESULTS}/logs/train_segmenter_{{source}}.log",
    wildcard_constraints:
        source="instances|saliency|ground_truth",
    params:
        images=IMAGENET,
        labels=lambda wildcards: f"{IMAGENET}/masks" if wildcards.source == "ground_truth" else f"{RESULTS}/proxy/{wildcards.source}/labels",
        out=lambda wildcards, output: os.path.dirname(output.checkpoint),
        seed=SEED,
        **WSSS["segmenter"],
    threads: 2
    resources:
        mem_mb=6000,
        runtime=120,
    shell:
        "wsss train-segmenter --images {params.images:q} --labels {params.labels:q} --out {params.out:q} "
        "--arch {params.arch} --encoder {params.encoder} --iterations {params.iterations} "
        "--batch-size {params.batch_size} --crop {params.crop} --lr {params.lr} --seed {params.seed} "
        "--device auto --quiet > {log:q} 2>&1"


rule evaluate_segmenter:
    """mIoU on the VOC val split."""
    input:
        checkpoint=rules.train_segmenter.output.checkpoint,
    output:
        metrics=f"{RESULTS}/segmenter/{{source}}/val_metrics.json",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_segmenter_{{source}}.tsv"
    log:
        f"{RESULTS}/logs/evaluate_segmenter_{{source}}.log",
    wildcard_constraints:
        source="instances|saliency|ground_truth",
    params:
        voc=VOC_ROOT,
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "wsss evaluate --checkpoint {input.checkpoint:q} --voc-root {params.voc:q} --split val "
        "--out {output.metrics:q} --quiet > {log:q} 2>&1"


rule score_proxy_labels:
    """Proxy labels against the generator's class masks (synthetic world only)."""
    input:
        manifest=rules.gather_proxy_labels.output.manifest,
    output:
        scores=f"{RESULTS}/proxy/{{cue}}/scores.json",
    benchmark:
        f"{RESULTS}/benchmarks/score_proxy_labels_{{cue}}.tsv"
    log:
        f"{RESULTS}/logs/score_proxy_labels_{{cue}}.log",
    wildcard_constraints:
        cue="instances|saliency",
    params:
        labels=lambda wildcards: f"{RESULTS}/proxy/{wildcards.cue}/labels",
        gt=f"{IMAGENET}/masks",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "wsss score --pred {params.labels:q} --gt {params.gt:q} --out {output.scores:q} > {log:q} 2>&1"


rule provenance:
    """The settings this DAG ran with, the code version and the Python environment."""
    output:
        settings=f"{RESULTS}/provenance/settings.json",
        code=f"{RESULTS}/provenance/code.json",
        environment=f"{RESULTS}/provenance/pip_freeze.txt",
    log:
        f"{RESULTS}/logs/provenance.log",
    params:
        out=lambda wildcards, output: os.path.dirname(output.settings),
        settings=json.dumps(SETTINGS, sort_keys=True),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "wsss provenance --out {params.out:q} --settings {params.settings:q} > {log:q} 2>&1"
