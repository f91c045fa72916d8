# The embedded demo campaign: raw files in real formats + truth.json.


rule simulate_demo:
    output:
        DEMO_OUTPUTS or [f"{DEMO_DIR}/truth.json"],
    params:
        directory=lambda wc, output: Path(output[0]).parent,
        seed=CONFIG["seed"],
        cli=XAFSFLOW,
    log:
        str(LAYOUT.log("simulate_demo", "demo")),
    shell:
        "{params.cli} simulate demo {params.directory:q} --seed {params.seed} > {log:q} 2>&1"
