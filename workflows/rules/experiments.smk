# The paper's ablations (Tables 1-3) on a synthetic world of their own: `snakemake experiments`.
# Each variant of each study is trained once per seed (a variant equal to the paper's S4Net is one
# run shared by the three studies); a table per study gives mean ± std beside the paper's numbers
# (workflows/configs/paper_tables.yaml).


rule experiment_world:
    """The synthetic world the ablations train and test on (experiments.scale)."""
    output:
        world=f"{EXPERIMENT_DIR}/world/world.json",
    log:
        f"{RESULTS}/logs/experiment_world.log",
    params:
        out=lambda wildcards, output: os.path.dirname(output.world),
        seed=SEED,
        scale=EXPERIMENTS["scale"],
    threads: JOBS["demo_data"]["threads"]
    resources:
        **job_resources("demo_data", gpus="none"),
    shell:
        "wsss demo-data --out {params.out:q} --seed {params.seed} --scale {params.scale} "
        "--workers {threads} --overwrite --quiet > {log:q} 2>&1"


rule experiment_train:
    """One variant of one study with one seed (resumes from its last checkpoint)."""
    input:
        world=rules.experiment_world.output.world,
        model_config=EXPERIMENTS["model_config"],
    output:
        checkpoint=f"{EXPERIMENT_DIR}/runs/{RUN_NAME}/seed{{seed}}/model_final.pt",
    benchmark:
        f"{RESULTS}/benchmarks/experiment_train_{RUN_NAME}_seed{{seed}}.tsv"
    log:
        f"{RESULTS}/logs/experiment_train_{RUN_NAME}_seed{{seed}}.log",
    wildcard_constraints:
        **RUN_WILDCARDS,
        seed=r"\d+",
    params:
        out=lambda wildcards, output: os.path.dirname(output.checkpoint),
        salient=lambda wildcards, input: f"{os.path.dirname(input.world)}/salient",
        variant=lambda wildcards: run_flags(wildcards.masking, wildcards.alpha, wildcards.backbone),
        size=EXPERIMENTS["size"],
        iterations=EXPERIMENTS["iterations"],
        batch_size=EXPERIMENTS["batch_size"],
        lr=EXPERIMENTS["lr"],
        lr_steps=" ".join(str(step) for step in EXPERIMENTS["lr_steps"]),
        warmup=EXPERIMENTS["warmup"],
        grad_clip=EXPERIMENTS["grad_clip"],
        checkpoint_every=EXPERIMENTS["checkpoint_every"],
        cache="--cache" if EXPERIMENTS["cache"] else "",
        cpu_bf16=EXPERIMENTS["cpu_bf16"],
        device=DEVICE,
    threads: JOBS["experiment_train"]["threads"]
    resources:
        **job_resources("experiment_train", gpus="training"),
    shell:
        LAUNCH_TRAINING
        + "s4net train --annotations {params.salient:q}/train.json --images {params.salient:q}/images "
        "--out {params.out:q} --model-config {input.model_config:q} {params.variant} --size {params.size} "
        "--iterations {params.iterations} --batch-size {params.batch_size} --lr {params.lr} "
        "--lr-steps {params.lr_steps} --warmup {params.warmup} --cpu-bf16 {params.cpu_bf16} --grad-clip {params.grad_clip} "
        "--checkpoint-every {params.checkpoint_every} --seed {wildcards.seed} {params.cache} --device {params.device} --quiet > {log:q} 2>&1"


rule experiment_evaluate:
    """Mask mAP of one trained variant on the world's salient test set (and its images/s)."""
    input:
        checkpoint=rules.experiment_train.output.checkpoint,
        world=rules.experiment_world.output.world,
    output:
        metrics=f"{EXPERIMENT_DIR}/runs/{RUN_NAME}/seed{{seed}}/test_metrics.json",
    # A trained run is scored before the next one trains, so a study stopped midway
    # leaves test_metrics.json for every finished run (for tools/keep_runs.py).
    priority: 10
    log:
        f"{RESULTS}/logs/experiment_evaluate_{RUN_NAME}_seed{{seed}}.log",
    wildcard_constraints:
        **RUN_WILDCARDS,
        seed=r"\d+",
    params:
        salient=lambda wildcards, input: f"{os.path.dirname(input.world)}/salient",
        device=DEVICE,
    threads: JOBS["evaluate_s4net"]["threads"]
    resources:
        **job_resources("evaluate_s4net", gpus="single"),
    shell:
        launch_single("experiment_evaluate")
        + "s4net evaluate --checkpoint {input.checkpoint:q} --annotations {params.salient:q}/test.json "
        "--images {params.salient:q}/images --out {output.metrics:q} --device {params.device} --quiet > {log:q} 2>&1"


rule experiment_peer_train:
    """torchvision Mask R-CNN with one backbone and one seed, trained as the S4Net runs are (s4net peer train)."""
    input:
        world=rules.experiment_world.output.world,
    output:
        checkpoint=f"{EXPERIMENT_DIR}/peers/maskrcnn-{{backbone}}/seed{{seed}}/model_final.pt",
    benchmark:
        f"{RESULTS}/benchmarks/experiment_peer_train_{{backbone}}_seed{{seed}}.tsv"
    log:
        f"{RESULTS}/logs/experiment_peer_train_{{backbone}}_seed{{seed}}.log",
    wildcard_constraints:
        backbone="|".join(PEER_BACKBONES),
        seed=r"\d+",
    params:
        out=lambda wildcards, output: os.path.dirname(output.checkpoint),
        salient=lambda wildcards, input: f"{os.path.dirname(input.world)}/salient",
        size=EXPERIMENTS["size"],
        iterations=EXPERIMENTS["iterations"],
        batch_size=EXPERIMENTS["batch_size"],
        lr=EXPERIMENTS["lr"],
        lr_steps=" ".join(str(step) for step in EXPERIMENTS["lr_steps"]),
        warmup=EXPERIMENTS["warmup"],
        grad_clip=EXPERIMENTS["grad_clip"],
        checkpoint_every=EXPERIMENTS["checkpoint_every"],
        cpu_bf16=EXPERIMENTS["cpu_bf16"],
        device=DEVICE,
    threads: JOBS["experiment_train"]["threads"]
    resources:
        **job_resources("experiment_train", gpus="training"),
    shell:
        LAUNCH_TRAINING
        + "s4net peer train --annotations {params.salient:q}/train.json --images {params.salient:q}/images "
        "--out {params.out:q} --backbone {wildcards.backbone} --size {params.size} --iterations {params.iterations} "
        "--batch-size {params.batch_size} --lr {params.lr} --lr-steps {params.lr_steps} --warmup {params.warmup} "
        "--grad-clip {params.grad_clip} --checkpoint-every {params.checkpoint_every} --cpu-bf16 {params.cpu_bf16} "
        "--seed {wildcards.seed} --device {params.device} --quiet > {log:q} 2>&1"


rule experiment_peer_evaluate:
    """Mask mAP and images/s of one Mask R-CNN peer on the world's salient test set (s4net evaluate's scoring)."""
    input:
        checkpoint=rules.experiment_peer_train.output.checkpoint,
        world=rules.experiment_world.output.world,
    output:
        metrics=f"{EXPERIMENT_DIR}/peers/maskrcnn-{{backbone}}/seed{{seed}}/test_metrics.json",
    priority: 10
    log:
        f"{RESULTS}/logs/experiment_peer_evaluate_{{backbone}}_seed{{seed}}.log",
    wildcard_constraints:
        backbone="|".join(PEER_BACKBONES),
        seed=r"\d+",
    params:
        salient=lambda wildcards, input: f"{os.path.dirname(input.world)}/salient",
        device=DEVICE,
    threads: JOBS["evaluate_s4net"]["threads"]
    resources:
        **job_resources("evaluate_s4net", gpus="single"),
    shell:
        launch_single("experiment_peer_evaluate")
        + "s4net peer evaluate --checkpoint {input.checkpoint:q} --annotations {params.salient:q}/test.json "
        "--images {params.salient:q}/images --out {output.metrics:q} --device {params.device} --quiet > {log:q} 2>&1"


rule experiment_table:
    """One study's table: mean ± std over seeds per variant, the paper's numbers beside them."""
    input:
        metrics=lambda wildcards: [path for _, path in study_runs(wildcards.study)],
        paper="workflows/configs/paper_tables.yaml",
    output:
        table=f"{EXPERIMENT_DIR}/{{study}}.json",
        markdown=f"{EXPERIMENT_DIR}/{{study}}.md",
        plot=f"{EXPERIMENT_DIR}/{{study}}.png",
    log:
        f"{RESULTS}/logs/experiment_table_{{study}}.log",
    wildcard_constraints:
        study="|".join(STUDY_NAMES),
    params:
        runs=lambda wildcards: " ".join(shlex.quote(f"{variant}={path}") for variant, path in study_runs(wildcards.study)),
        peers=lambda wildcards: " ".join(shlex.quote(f"{name}={variant}")
                                         for name, (_, variant) in experiment_peers(wildcards.study).items()),
        metrics=" ".join(EXPERIMENTS["metrics"]),
    threads: JOBS["light"]["threads"]
    resources:
        **job_resources("light", gpus="none"),
    shell:
        "s4net ablation-table --study {wildcards.study} --runs {params.runs} --peers {params.peers} --paper {input.paper:q} "
        "--metrics {params.metrics} --out {output.table:q} --markdown {output.markdown:q} --plot {output.plot:q} > {log:q} 2>&1"


rule experiment_gradients:
    """The paper's Fig. 6: |dL_seg/dH| of binary against ternary RoIMasking, first seed, same test images."""
    input:
        binary=f"{run_folder('masking', 'binary', EXPERIMENTS['seeds'][0])}/model_final.pt",
        ternary=f"{run_folder('masking', 'ternary', EXPERIMENTS['seeds'][0])}/model_final.pt",
        world=rules.experiment_world.output.world,
    output:
        maps=directory(f"{EXPERIMENT_DIR}/gradient_maps"),
    log:
        f"{RESULTS}/logs/experiment_gradients.log",
    params:
        salient=lambda wildcards, input: f"{os.path.dirname(input.world)}/salient",
        device=DEVICE,
    threads: JOBS["evaluate_s4net"]["threads"]
    resources:
        **job_resources("evaluate_s4net", gpus="single"),
    shell:
        launch_single("experiment_gradients")
        + "s4net explain --checkpoint {input.binary:q} {input.ternary:q} --annotations {params.salient:q}/test.json "
        "--images {params.salient:q}/images --out {output.maps:q} --device {params.device} --quiet > {log:q} 2>&1"


rule experiments:
    """Every study with at least one variant, and the gradient maps when both binary and ternary are studied."""
    input:
        [f"{EXPERIMENT_DIR}/{study}.md" for study, variants in STUDIES.items() if variants],
        ([rules.experiment_gradients.output.maps] if {"binary", "ternary"} <= set(STUDIES["masking"])
         and not kept_gradient_maps() else []),
