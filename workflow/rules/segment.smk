# Segment product: hidden Potts MRF grain segmentation of a normalized micro-XAFS stack.
_SEGMENT = PRODUCTS_BY_NAME["segment"]


rule segment:
    input:
        unpack(segment_inputs),
    output:
        **product_outputs(_SEGMENT),
    params:
        args=step_args("segment", _SEGMENT.params_key),
        nmf=segment_nmf_arg,
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
        "NUMBA_NUM_THREADS={threads} {params.cli} segment {input.scan:q} --scan-id {wildcards.scan_id} {params.args}"
        " {params.nmf} --threads {threads} --mem-mb {resources.mem_mb} {params.dashboard} --seed {params.seed}"
        " --out {output.store:q} --tsv {output.tsv:q} --png {output.png:q} > {log:q} 2>&1"
