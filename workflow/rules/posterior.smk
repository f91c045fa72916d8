# Posterior product: replica-exchange Monte Carlo over K, free energy, P(K | data).
_POSTERIOR = PRODUCTS_BY_NAME["posterior"]


rule posterior:
    input:
        str(LAYOUT.scan_store("{scan_id}")),
    output:
        **product_outputs(_POSTERIOR),
    params:
        args=step_args("posterior", _POSTERIOR.params_key),
        seed=CONFIG["seed"],
        dashboard=DASHBOARD,
        cli=XAFSFLOW,
    threads: 2
    resources:
        mem_mb=2000,
        runtime=120,
    log:
        str(LAYOUT.log("posterior", "{scan_id}")),
    benchmark:
        str(LAYOUT.benchmark("posterior", "{scan_id}"))
    shell:
        "NUMBA_NUM_THREADS=1 {params.cli} posterior {input:q} --scan-id {wildcards.scan_id} {params.args}"
        " --threads {threads} --mem-mb {resources.mem_mb} {params.dashboard}"
        # checkpoints live outside the outputs, so --rerun-incomplete keeps them: an interrupted job resumes
        f" --checkpoint-dir {LAYOUT.checkpoints('posterior', '{wildcards.scan_id}')} --seed {{params.seed}}"
        " --out {output.store:q} --tsv {output.tsv:q} --png {output.png:q} > {log:q} 2>&1"
