# xafsflow: from a synchrotron XAFS campaign to analysis products.
# Target rules only; each stage lives in workflow/rules/<stage>.smk, each product
# in workflow/rules/<product>.smk (included from the product registry).

from snakemake.utils import min_version

min_version("9.0")


# The demo campaign is the default; a --configfile REPLACES it (a user's campaign
# never inherits the demo's settings: keys it leaves out take the schema defaults).
if not workflow.overwrite_configfiles:
    workflow.configfile("config/config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/ingest.smk"


for _product in PRODUCTS:

    include: f"workflow/rules/{_product.rule_file}"


include: "workflow/rules/summary.smk"


rule all:
    input:
        str(LAYOUT.summary_table),
        str(LAYOUT.report),
        ALL_PRODUCT_TARGETS,
    default_target: True


rule scans:
    """Ingest and normalize every scan of the sheet (no products)."""
    input:
        [str(LAYOUT.scan_store(s)) for s in CAMPAIGN.ids()],
