# Raw file(s) -> ingested store -> normalized scan store (+ figure).


rule ingest:
    input:
        unpack(ingest_inputs),
    output:
        directory(str(LAYOUT.raw_store("{scan_id}"))),
    params:
        args=ingest_args,
        chunk_pixels=CONFIG["stack"]["chunk_pixels"],
        seed=CONFIG["seed"],
        cli=XAFSFLOW,
    log:
        str(LAYOUT.log("ingest", "{scan_id}")),
    benchmark:
        str(LAYOUT.benchmark("ingest", "{scan_id}"))
    resources:
        mem_mb=stack_or(4000, 1000),
    shell:
        "{params.cli} ingest {input.raw:q} --scan-id {wildcards.scan_id} {params.args}"
        " --chunk-pixels {params.chunk_pixels} --seed {params.seed} --out {output:q} > {log:q} 2>&1"


rule normalize:
    input:
        str(LAYOUT.raw_store("{scan_id}")),
    output:
        store=directory(str(LAYOUT.scan_store("{scan_id}"))),
        png=str(LAYOUT.scan_figure("{scan_id}")),
    params:
        args=step_args("normalize", "normalize"),
        seed=CONFIG["seed"],
        dashboard=DASHBOARD,
        scheduler=STEP_SCHEDULER,
        cli=XAFSFLOW,
    threads: stack_or(2, 1)
    resources:
        mem_mb=stack_or(4000, 1000),
    log:
        str(LAYOUT.log("normalize", "{scan_id}")),
    benchmark:
        str(LAYOUT.benchmark("normalize", "{scan_id}"))
    shell:
        "NUMBA_NUM_THREADS={threads} {params.cli} normalize {input:q} {params.args}"
        " --threads {threads} --mem-mb {resources.mem_mb} --seed {params.seed} {params.dashboard}"
        " {params.scheduler} --out {output.store:q} --png {output.png:q} > {log:q} 2>&1"
