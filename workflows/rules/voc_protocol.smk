# The field's pseudo-label yardstick (`snakemake voc_pseudo_labels`): proxy labels of a VOC split (train, as papers
# report) made from its image-level tags alone, by every cue and by the saliency cues fed with outside saliency
# maps, each scored against SegmentationClass; the table stands beside published numbers in the report.
# Its settings and helpers (VOC_PROTOCOL, VOC_LABELLERS, voc_labeller_inputs) are in common.smk.


rule voc_tags:
    """Image-level tags of the VOC split (wsss voc-tags): the protocol's only supervision."""
    input:
        data_input("voc_root"),
    output:
        tags=f"{VOC_DIR}/tags.csv",
    log:
        f"{RESULTS}/logs/voc_tags.log",
    params:
        voc=DATA["voc_root"],
        split=VOC_PROTOCOL["split"],
        source=VOC_PROTOCOL["tag_source"],
    threads: JOBS["light"]["threads"]
    resources:
        **job_resources("light", gpus="none"),
    shell:
        "wsss voc-tags --voc-root {params.voc:q} --split {params.split} --source {params.source} "
        "--out {output.tags:q} > {log:q} 2>&1"


rule oracle_saliency:
    """Saliency maps made from the VOC class masks: what a perfect class-agnostic saliency model would give."""
    input:
        data_input("voc_root"),
    output:
        maps=directory(f"{VOC_DIR}/oracle_saliency"),
    log:
        f"{RESULTS}/logs/oracle_saliency.log",
    params:
        masks=f"{DATA['voc_root']}/SegmentationClass",
    threads: JOBS["light"]["threads"]
    resources:
        **job_resources("light", gpus="none"),
    shell:
        "wsss saliency-from-masks --masks {params.masks:q} --out {output.maps:q} > {log:q} 2>&1"


rule voc_proxy_labels:
    """Proxy labels of the VOC split by one labeller (resumable; see `wsss proxy-labels`)."""
    input:
        unpack(voc_labeller_inputs),
        tags=rules.voc_tags.output.tags,
    output:
        summary=f"{VOC_DIR}/{{labeller}}/{Shard.summary_name_for(0, 1)}",
    benchmark:
        f"{RESULTS}/benchmarks/voc_proxy_labels_{{labeller}}.tsv"
    log:
        f"{RESULTS}/logs/voc_proxy_labels_{{labeller}}.log",
    wildcard_constraints:
        labeller=VOC_LABELLER_PATTERN,
    params:
        images=f"{DATA['voc_root']}/JPEGImages",
        out=lambda wildcards, output: os.path.dirname(output.summary),
        cue=lambda wildcards: labeller_cue(wildcards.labeller),
        source=voc_labeller_flags,
        crf="--crf" if WSSS["crf"] else "",
        score_threshold=WSSS["score_threshold"],
        device=DEVICE,
    threads: JOBS["proxy_labels"]["threads"]
    resources:
        **job_resources("proxy_labels", gpus="single"),
    shell:
        launch_single("voc_proxy_labels")
        + "wsss proxy-labels {params.source} --images {params.images:q} --keywords {input.tags:q} "
        "--out {params.out:q} --cue {params.cue} {params.crf} --score-threshold {params.score_threshold} "
        "--device {params.device} --quiet > {log:q} 2>&1"


rule score_voc_proxy_labels:
    """One labeller's proxy labels of the VOC split against SegmentationClass (mIoU, precision, recall)."""
    input:
        data_input("voc_root"),
        summary=rules.voc_proxy_labels.output.summary,
    output:
        scores=f"{VOC_DIR}/{{labeller}}/scores.json",
    log:
        f"{RESULTS}/logs/score_voc_proxy_labels_{{labeller}}.log",
    wildcard_constraints:
        labeller=VOC_LABELLER_PATTERN,
    params:
        labels=lambda wildcards, input: f"{os.path.dirname(input.summary)}/labels",
        gt=f"{DATA['voc_root']}/SegmentationClass",
        ids=VOC_SPLIT_IDS,
    threads: JOBS["light"]["threads"]
    resources:
        **job_resources("light", gpus="none"),
    shell:
        "wsss score --pred {params.labels:q} --gt {params.gt:q} --ids {params.ids:q} --out {output.scores:q} "
        "> {log:q} 2>&1"


rule voc_pseudo_labels:
    """The VOC pseudo-label table: every labeller beside the published anchors (a report page and its json)."""
    input:
        scores=expand(rules.score_voc_proxy_labels.output.scores, labeller=VOC_LABELLERS),
    output:
        table=report(f"{VOC_DIR}/pseudo_labels.html", caption="../report/voc_pseudo_labels.rst",
                     category="2. Segmentation", labels={"result": "VOC pseudo labels"}),
        summary=f"{VOC_DIR}/pseudo_labels.json",
    log:
        f"{RESULTS}/logs/voc_pseudo_labels.log",
    params:
        scores=lambda wildcards, input: named(zip(VOC_LABELLERS, input.scores)),
        out=lambda wildcards, output: os.path.splitext(output.summary)[0],
        split=VOC_PROTOCOL["split"],
        note=("The demo's synthetic VOC split with an S4Net trained on synthetic shapes: comparable with the "
              "published rows in protocol only, not in data." if DEMO else ""),
    threads: JOBS["light"]["threads"]
    resources:
        **job_resources("light", gpus="none"),
    shell:
        "wsss pseudo-label-table --scores {params.scores} --split {params.split} --note {params.note:q} "
        "--out {params.out:q} > {log:q} 2>&1"
