# Raw file(s) -> ingested store -> normalized scan store (+ figure).


rule ingest:
    input:
        raw=raw_inputs,
        energies=energies_input,
    output:
        directory(f"{RESULTS}/raw/{{scan_id}}.zarr"),
    params:
        kind=lambda wc: scan_of(wc).kind,
        format=lambda wc: scan_of(wc).format,
        fields=sheet_fields_json,
        energies=lambda wc, input: f"--energies {input.energies[0]}" if input.energies else "",
        chunk_pixels=config["stack"]["chunk_pixels"],
        seed=config["seed"],
        config_hash=CONFIG_HASH,
        cli=XAFSFLOW,
    log:
        f"{RESULTS}/logs/ingest/{{scan_id}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/ingest/{{scan_id}}.tsv"
    resources:
        mem_mb=lambda wc: 4000 if is_stack(wc) else 1000,
    shell:
        "{params.cli} ingest {input.raw:q} --scan-id {wildcards.scan_id} --kind {params.kind}"
        " --format {params.format} --fields {params.fields:q} {params.energies}"
        " --chunk-pixels {params.chunk_pixels} --seed {params.seed} --config-hash {params.config_hash}"
        " --out {output:q} > {log:q} 2>&1"


rule normalize:
    input:
        f"{RESULTS}/raw/{{scan_id}}.zarr",
    output:
        store=directory(f"{RESULTS}/scans/{{scan_id}}.zarr"),
        png=f"{RESULTS}/scans/{{scan_id}}.png",
    params:
        analysis=params_json,
        seed=config["seed"],
        config_hash=CONFIG_HASH,
        cli=XAFSFLOW,
    threads: lambda wc: 2 if is_stack(wc) else 1
    resources:
        mem_mb=lambda wc: 4000 if is_stack(wc) else 1000,
    log:
        f"{RESULTS}/logs/normalize/{{scan_id}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/normalize/{{scan_id}}.tsv"
    shell:
        "NUMBA_NUM_THREADS={threads} {params.cli} normalize {input:q} --params {params.analysis:q}"
        " --threads {threads} --mem-mb {resources.mem_mb} --seed {params.seed}"
        " --config-hash {params.config_hash} --out {output.store:q} --png {output.png:q} > {log:q} 2>&1"
