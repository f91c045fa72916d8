# Posterior product: replica-exchange Monte Carlo over K, free energy, P(K | data).


rule posterior:
    input:
        f"{RESULTS}/scans/{{scan_id}}.zarr",
    output:
        store=directory(f"{RESULTS}/posterior/{{scan_id}}.zarr"),
        tsv=f"{RESULTS}/posterior/{{scan_id}}.tsv",
        png=report(f"{RESULTS}/posterior/{{scan_id}}.png", caption="../report/posterior.rst", category="Posterior"),
    params:
        analysis=params_json,
        seed=config["seed"],
        config_hash=CONFIG_HASH,
        cli=XAFSFLOW,
        # outside the outputs, so --rerun-incomplete does not delete it: an interrupted job resumes
        checkpoints=lambda wc: f"{RESULTS}/checkpoints/posterior/{wc.scan_id}",
    threads: 2
    resources:
        mem_mb=2000,
        runtime=120,
    log:
        f"{RESULTS}/logs/posterior/{{scan_id}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/posterior/{{scan_id}}.tsv"
    shell:
        "NUMBA_NUM_THREADS=1 {params.cli} posterior {input:q} --scan-id {wildcards.scan_id}"
        " --params {params.analysis:q} --threads {threads} --mem-mb {resources.mem_mb}"
        " --checkpoint-dir {params.checkpoints:q} --seed {params.seed} --config-hash {params.config_hash}"
        " --out {output.store:q} --tsv {output.tsv:q} --png {output.png:q} > {log:q} 2>&1"
