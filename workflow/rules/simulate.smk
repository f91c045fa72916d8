# The embedded demo campaign: raw files in real formats + truth.json.


rule simulate_demo:
    output:
        DEMO_OUTPUTS or [f"{DEMO_DIR}/truth.json"],
    params:
        directory=DEMO_DIR,
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/simulate_demo/demo.log",
    shell:
        "{XAFSFLOW} simulate demo {params.directory:q} --seed {params.seed} > {log:q} 2>&1"
