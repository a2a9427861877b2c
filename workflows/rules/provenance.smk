# The settings a run used, the code version and the Python environment: the default and the real-photo targets
# record them (their reports name the commit the numbers come from).


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
    threads: JOBS["light"]["threads"]
    resources:
        **job_resources("light", gpus="none"),
    shell:
        "wsss provenance --out {params.out:q} --settings {params.settings:q} > {log:q} 2>&1"
