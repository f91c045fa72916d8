# Segment product: hidden Potts MRF grain segmentation of a normalized micro-XAFS stack.
_SEGMENT = PRODUCTS_BY_NAME["segment"]


def segment_nmf_store(wildcards):
    """The scan's nmf store when its segment block uses the NMF abundances, else None."""
    scan = scan_of(wildcards)
    if scan.params[_SEGMENT.params_key]["abundances"]:
        return str(LAYOUT.product_store(PRODUCTS_BY_NAME["nmf"], scan.scan_id))
    return None


def segment_inputs(wildcards):
    """The scan store, and the nmf store only when the abundances are features."""
    nmf = segment_nmf_store(wildcards)
    return {"scan": str(LAYOUT.scan_store(wildcards.scan_id)), **({"nmf": nmf} if nmf else {})}


def segment_nmf_arg(wildcards):
    nmf = segment_nmf_store(wildcards)
    return f"--nmf-store {shlex.quote(nmf)}" if nmf else ""


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
