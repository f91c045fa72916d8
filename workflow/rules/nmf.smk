# NMF product: distributed HALS factorization of a normalized stack (segmentation/<scan_id>.nmf.zarr).
_NMF = PRODUCTS_BY_NAME["nmf"]


rule nmf:
    input:
        str(LAYOUT.scan_store("{scan_id}")),
    output:
        **product_outputs(_NMF),
    params:
        args=step_args("nmf", _NMF.params_key),
        seed=CONFIG["seed"],
        dashboard=DASHBOARD,
        cli=XAFSFLOW,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    log:
        str(LAYOUT.log("nmf", "{scan_id}")),
    benchmark:
        str(LAYOUT.benchmark("nmf", "{scan_id}"))
    shell:
        "{params.cli} nmf {input:q} --scan-id {wildcards.scan_id} {params.args}"
        " --threads {threads} --mem-mb {resources.mem_mb} {params.dashboard} --seed {params.seed}"
        " --out {output.store:q} --tsv {output.tsv:q} --png {output.png:q} > {log:q} 2>&1"
