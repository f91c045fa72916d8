# Segment product: hidden Potts MRF grain segmentation of a normalized micro-XAFS stack.
_SEGMENT = PRODUCTS_BY_NAME["segment"]


rule segment:
    input:
        str(LAYOUT.scan_store("{scan_id}")),
    output:
        **product_outputs(_SEGMENT),
    params:
        args=step_args("segment", _SEGMENT.params_key),
        seed=CONFIG["seed"],
        dashboard=DASHBOARD,
        cli=XAFSFLOW,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    log:
        str(LAYOUT.log("segment", "{scan_id}")),
    benchmark:
        str(LAYOUT.benchmark("segment", "{scan_id}"))
    shell:
        "NUMBA_NUM_THREADS={threads} {params.cli} segment {input:q} --scan-id {wildcards.scan_id} {params.args}"
        " --threads {threads} --mem-mb {resources.mem_mb} {params.dashboard} --seed {params.seed}"
        " --out {output.store:q} --tsv {output.tsv:q} --png {output.png:q} > {log:q} 2>&1"
