# xafsflow: from a synchrotron XAFS campaign to analysis products.
# Target rules only; each stage lives in workflow/rules/<stage>.smk.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/posterior.smk"
include: "workflow/rules/summary.smk"


rule all:
    input:
        f"{RESULTS}/summary.tsv",
        f"{RESULTS}/report.html",
        POSTERIOR_PRODUCTS,
    default_target: True


rule scans:
    """Ingest and normalize every scan of the sheet (no products)."""
    input:
        expand(f"{RESULTS}/scans/{{scan_id}}.zarr", scan_id=CAMPAIGN.ids()),
