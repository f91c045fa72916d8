# Sparse-structure product: FEFF single-scattering basis, cross-validated nonnegative LASSO, shells.
_SPARSE = PRODUCTS_BY_NAME["sparse_structure"]


rule sparse_structure:
    input:
        str(LAYOUT.scan_store("{scan_id}")),
    output:
        **product_outputs(_SPARSE),
    params:
        args=step_args("sparse_structure", _SPARSE.params_key),
        seed=CONFIG["seed"],
        cli=XAFSFLOW,
        # FEFF runs once per (absorber, scatterer, edge, r_ref) and is shared by every scan
        feff_cache=str(LAYOUT.resources("feff")),
    threads: 1
    resources:
        mem_mb=1500,
        runtime=30,
    log:
        str(LAYOUT.log("sparse_structure", "{scan_id}")),
    benchmark:
        str(LAYOUT.benchmark("sparse_structure", "{scan_id}"))
    shell:
        "OMP_NUM_THREADS=1 {params.cli} sparse_structure {input:q} --scan-id {wildcards.scan_id} {params.args}"
        " --feff-cache {params.feff_cache:q} --seed {params.seed}"
        " --out {output.store:q} --tsv {output.tsv:q} --png {output.png:q} > {log:q} 2>&1"
