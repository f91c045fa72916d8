# Domain parameters: alpha of each domain image from the campaign's domain model.
_DOMAIN_PARAMETERS = PRODUCTS_BY_NAME["domain_parameters"]
_DOMAIN_MODEL_STORE = str(LAYOUT.product_store(PRODUCTS_BY_NAME["domain_model"],
                                               PRODUCTS_BY_NAME["domain_model"].campaign_id))


rule domain_parameters:
    input:
        scan=str(LAYOUT.scan_store("{scan_id}")),
        model=_DOMAIN_MODEL_STORE,
    output:
        **product_outputs(_DOMAIN_PARAMETERS),
    params:
        args=step_args("domain_parameters", _DOMAIN_PARAMETERS.params_key),
        seed=CONFIG["seed"],
        cli=XAFSFLOW,
    resources:
        mem_mb=1000,
    log:
        str(LAYOUT.log("domain_parameters", "{scan_id}")),
    benchmark:
        str(LAYOUT.benchmark("domain_parameters", "{scan_id}"))
    shell:
        "OMP_NUM_THREADS=1 {params.cli} domain_parameters {input.scan:q} --model {input.model:q}"
        " --scan-id {wildcards.scan_id} {params.args} --seed {params.seed}"
        " --out {output.store:q} --tsv {output.tsv:q} --png {output.png:q} > {log:q} 2>&1"
