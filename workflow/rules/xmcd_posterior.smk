# XMCD posterior product: both helicities and the dichroism decomposed by replica exchange,
# numbers of components by free energy, sum-rule moments with intervals. Its stores share the
# posterior directory with the XANES/spectrum posterior rule; the constraint below limits this
# rule to the campaign's XMCD pairs and the ruleorder gives it those scans.
_XMCD_POSTERIOR = PRODUCTS_BY_NAME["xmcd_posterior"]
_XMCD_IDS = CAMPAIGN.product_ids(_XMCD_POSTERIOR)

ruleorder: xmcd_posterior > posterior


rule xmcd_posterior:
    input:
        str(LAYOUT.scan_store("{scan_id}")),
    output:
        **product_outputs(_XMCD_POSTERIOR),
    wildcard_constraints:
        scan_id="|".join(_XMCD_IDS) if _XMCD_IDS else "(?!)",
    params:
        args=step_args("xmcd_posterior", _XMCD_POSTERIOR.params_key),
        seed=CONFIG["seed"],
        dashboard=DASHBOARD,
        cli=XAFSFLOW,
    threads: 2
    resources:
        mem_mb=2000,
        runtime=120,
    log:
        str(LAYOUT.log("xmcd_posterior", "{scan_id}")),
    benchmark:
        str(LAYOUT.benchmark("xmcd_posterior", "{scan_id}"))
    shell:
        "NUMBA_NUM_THREADS=1 {params.cli} xmcd_posterior {input:q} --scan-id {wildcards.scan_id} {params.args}"
        " --threads {threads} --mem-mb {resources.mem_mb} {params.dashboard}"
        # checkpoints live outside the outputs, so --rerun-incomplete keeps them: an interrupted job resumes
        f" --checkpoint-dir {LAYOUT.checkpoints('xmcd_posterior', '{wildcards.scan_id}')} --seed {{params.seed}}"
        " --out {output.store:q} --tsv {output.tsv:q} --png {output.png:q} > {log:q} 2>&1"
