# Campaign summary and HTML report. Also written when the run fails, so that
# failed and killed scans are listed with their reasons.


rule summary:
    input:
        stores=[str(LAYOUT.scan_store(s)) for s in CAMPAIGN.ids()],
        products=ALL_PRODUCT_TARGETS,
        sheet=CAMPAIGN.sheet,
    output:
        tsv=str(LAYOUT.summary_table),
        html=report(str(LAYOUT.report), caption="../report/summary.rst", category="Campaign"),
    params:
        results=lambda wc, output: Path(output.tsv).parent,
        config=json.dumps(CONFIG, sort_keys=True),
        cli=XAFSFLOW,
    log:
        str(LAYOUT.log("summary", "campaign")),
    shell:
        "{params.cli} summary --results {params.results:q} --sheet {input.sheet:q} --config-json {params.config:q}"
        " --out {output.tsv:q} --report {output.html:q} > {log:q} 2>&1"


onerror:
    from xafsflow.summary import write_summary

    rows = write_summary(LAYOUT.root, CAMPAIGN.sheet, LAYOUT.summary_table, LAYOUT.report, config=CONFIG)
    bad = [r for r in rows if r["status"] != "ok"]
    print(f"xafsflow: {len(bad)} scan(s) not ok; see {LAYOUT.summary_table}", file=sys.stderr)
    for r in bad:
        print(f"  {r['scan_id']}: {r['status']} {r['reason']}", file=sys.stderr)


onsuccess:
    print(f"xafsflow: products in {LAYOUT.root}/, summary {LAYOUT.summary_table}, report {LAYOUT.report}")
