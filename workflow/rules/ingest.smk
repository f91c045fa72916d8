# Raw file(s) -> ingested store -> normalized scan store (+ figure).


rule ingest:
    input:
        raw=raw_inputs,
        energies=energies_input,
    output:
        directory(str(LAYOUT.raw_store("{scan_id}"))),
    params:
        kind=lambda wc: scan_of(wc).kind,
        format=lambda wc: scan_of(wc).format,
        fields=sheet_fields_json,
        energies=lambda wc, input: f"--energies {input.energies[0]}" if input.energies else "",
        chunk_pixels=CONFIG["stack"]["chunk_pixels"],
        seed=CONFIG["seed"],
        hash=step_hash("ingest"),
        cli=XAFSFLOW,
    log:
        str(LAYOUT.log("ingest", "{scan_id}")),
    benchmark:
        str(LAYOUT.benchmark("ingest", "{scan_id}"))
    resources:
        mem_mb=lambda wc: 4000 if is_stack(wc) else 1000,
    shell:
        "{params.cli} ingest {input.raw:q} --scan-id {wildcards.scan_id} --kind {params.kind}"
        " --format {params.format} --fields {params.fields:q} {params.energies}"
        " --chunk-pixels {params.chunk_pixels} --seed {params.seed} --params-hash {params.hash}"
        " --out {output:q} > {log:q} 2>&1"


rule normalize:
    input:
        str(LAYOUT.raw_store("{scan_id}")),
    output:
        store=directory(str(LAYOUT.scan_store("{scan_id}"))),
        png=str(LAYOUT.scan_figure("{scan_id}")),
    params:
        analysis=params_json("normalize"),
        seed=CONFIG["seed"],
        hash=step_hash("normalize"),
        dashboard=DASHBOARD,
        cli=XAFSFLOW,
    threads: lambda wc: 2 if is_stack(wc) else 1
    resources:
        mem_mb=lambda wc: 4000 if is_stack(wc) else 1000,
    log:
        str(LAYOUT.log("normalize", "{scan_id}")),
    benchmark:
        str(LAYOUT.benchmark("normalize", "{scan_id}"))
    shell:
        "NUMBA_NUM_THREADS={threads} {params.cli} normalize {input:q} --params {params.analysis:q}"
        " --threads {threads} --mem-mb {resources.mem_mb} --seed {params.seed} {params.dashboard}"
        " --params-hash {params.hash} --out {output.store:q} --png {output.png:q} > {log:q} 2>&1"
