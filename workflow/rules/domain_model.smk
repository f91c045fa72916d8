# Domain model (campaign level): TDGL ensemble, texture statistics, PCA and the regression of alpha.
# One store per campaign; rerun only when its config block, the seed or its version change.
_DOMAIN_MODEL = PRODUCTS_BY_NAME["domain_model"]


rule domain_model:
    output:
        **campaign_outputs(_DOMAIN_MODEL),
    params:
        args=campaign_args(_DOMAIN_MODEL),
        seed=CONFIG["seed"],
        dashboard=DASHBOARD,
        cli=XAFSFLOW,
    threads: 2
    resources:
        mem_mb=2000,
        runtime=60,
    log:
        str(LAYOUT.log("domain_model", "campaign")),
    benchmark:
        str(LAYOUT.benchmark("domain_model", "campaign"))
    shell:
        "OMP_NUM_THREADS=1 {params.cli} domain_model {params.args} --threads {threads} --mem-mb {resources.mem_mb}"
        " {params.dashboard} --seed {params.seed} --out {output.store:q} --tsv {output.tsv:q} --png {output.png:q}"
        " > {log:q} 2>&1"
