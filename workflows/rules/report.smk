rule report:
    """Tables, chart and sample sheets for the Snakemake report (wsss report)."""
    input:
        s4net=rules.evaluate_s4net.output.metrics,
        segmenters=expand(rules.evaluate_segmenter.output.metrics, source=SOURCES),
        predictions=expand(rules.evaluate_segmenter.output.predictions, source=SOURCES),
        manifests=expand(rules.gather_proxy_labels.output.manifest, cue=CUES),
        scores=expand(rules.score_proxy_labels.output.scores, cue=CUES) if DATA["proxy_gt"] else [],
        pseudo_labels=rules.voc_pseudo_labels.output.summary if VOC_PROTOCOL["enabled"] else [],
        code=rules.provenance.output.code,
    output:
        s4net=report(f"{RESULTS}/report/s4net_map.html", caption="../report/s4net.rst", category="1. S4Net",
                     labels={"result": "mask mAP"}),
        miou=report(f"{RESULTS}/report/miou.html", caption="../report/miou.rst", category="2. Segmentation",
                    labels={"result": "mIoU by label source"}),
        per_class=report(f"{RESULTS}/report/per_class_iou.png", caption="../report/per_class.rst", category="2. Segmentation",
                         labels={"result": "per-class IoU"}),
        proxy=report(f"{RESULTS}/report/proxy_overlays.png", caption="../report/proxy_overlays.rst", category="3. Samples",
                     labels={"result": "proxy labels"}),
        predictions=report(f"{RESULTS}/report/prediction_overlays.png", caption="../report/prediction_overlays.rst",
                           category="3. Samples", labels={"result": "predictions"}),
        runtimes=report(f"{RESULTS}/report/runtimes.png", caption="../report/runtimes.rst", category="4. Runtimes",
                        labels={"result": "chart"}),
        runtimes_table=report(f"{RESULTS}/report/runtimes.html", caption="../report/runtimes.rst", category="4. Runtimes",
                              labels={"result": "table"}),
        summary=f"{RESULTS}/report/summary.json",
    log:
        f"{RESULTS}/logs/report.log",
    params:
        out=lambda wildcards, output: os.path.dirname(output.summary),
        segmenters=lambda wildcards, input: named(zip(SOURCES, input.segmenters)),
        predictions=lambda wildcards, input: named(zip(SOURCES, input.predictions)),
        labels=named((cue, f"{RESULTS}/proxy/{cue}/labels") for cue in CUES),
        scores=lambda wildcards, input: f"--proxy-scores {named(zip(CUES, input.scores))}" if input.scores else "",
        proxy_gt=optional_flag("--proxy-gt", DATA["proxy_gt"]),
        imagenet=DATA["imagenet"],
        keywords=DATA["keywords"],
        voc=DATA["voc_root"],
        split=DATA["val_split"],
        benchmarks=f"{RESULTS}/benchmarks",  # every job before this one has written its benchmark file
        seed=SEED,
        pseudo_labels=lambda wildcards, input: optional_flag("--pseudo-label-table", input.pseudo_labels or None),
    threads: JOBS["report"]["threads"]
    resources:
        **job_resources("report", gpus="none"),
    shell:
        "wsss report --s4net-metrics {input.s4net:q} --segmenter {params.segmenters} --predictions {params.predictions} "
        "--proxy-labels {params.labels} {params.scores} {params.proxy_gt} --imagenet {params.imagenet:q} "
        "--keywords {params.keywords:q} --voc-root {params.voc:q} --split {params.split} "
        "--benchmarks {params.benchmarks:q} --seed {params.seed} {params.pseudo_labels} --code {input.code:q} --out {params.out:q} > {log:q} 2>&1"
