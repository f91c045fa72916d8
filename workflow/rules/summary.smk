# Campaign summary and HTML report. Also written when the run fails, so that
# failed scans are listed with their reasons.


rule summary:
    input:
        stores=expand(f"{RESULTS}/scans/{{scan_id}}.zarr", scan_id=CAMPAIGN.ids()),
        products=POSTERIOR_PRODUCTS,
        sheet=CAMPAIGN.sheet,
    output:
        tsv=f"{RESULTS}/summary.tsv",
        html=report(f"{RESULTS}/report.html", caption="../report/summary.rst", category="Campaign"),
    params:
        results=lambda wc, output: Path(output.tsv).parent,
        cli=XAFSFLOW,
    log:
        f"{RESULTS}/logs/summary/summary.log",
    shell:
        "{params.cli} summary --results {params.results:q} --sheet {input.sheet:q} --out {output.tsv:q}"
        " --report {output.html:q} > {log:q} 2>&1"


onerror:
    from xafsflow.summary import write_summary

    rows = write_summary(RESULTS, CAMPAIGN.sheet, f"{RESULTS}/summary.tsv", f"{RESULTS}/report.html")
    bad = [r for r in rows if r["status"] != "ok"]
    print(f"xafsflow: {len(bad)} scan(s) not ok; see {RESULTS}/summary.tsv", file=sys.stderr)
    for r in bad:
        print(f"  {r['scan_id']}: {r['status']} {r['reason']}", file=sys.stderr)


onsuccess:
    print(f"xafsflow: products in {RESULTS}/, summary {RESULTS}/summary.tsv, report {RESULTS}/report.html")
