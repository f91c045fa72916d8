# Posterior product: replica-exchange Monte Carlo over K, free energy, P(K | data).
_POSTERIOR = PRODUCTS_BY_NAME["posterior"]


rule posterior:
    input:
        str(LAYOUT.scan_store("{scan_id}")),
    output:
        **product_outputs(_POSTERIOR),
    params:
        analysis=params_json(_POSTERIOR.params_key),
        seed=CONFIG["seed"],
        hash=step_hash("posterior"),
        dashboard=DASHBOARD,
        cli=XAFSFLOW,
        # outside the outputs, so --rerun-incomplete does not delete it: an interrupted job resumes
        checkpoints=lambda wc: str(LAYOUT.checkpoints("posterior", wc.scan_id)),
    threads: 2
    resources:
        mem_mb=2000,
        runtime=120,
    log:
        str(LAYOUT.log("posterior", "{scan_id}")),
    benchmark:
        str(LAYOUT.benchmark("posterior", "{scan_id}"))
    shell:
        "NUMBA_NUM_THREADS=1 {params.cli} posterior {input:q} --scan-id {wildcards.scan_id}"
        " --params {params.analysis:q} --threads {threads} --mem-mb {resources.mem_mb} {params.dashboard}"
        " --checkpoint-dir {params.checkpoints:q} --seed {params.seed} --params-hash {params.hash}"
        " --out {output.store:q} --tsv {output.tsv:q} --png {output.png:q} > {log:q} 2>&1"
