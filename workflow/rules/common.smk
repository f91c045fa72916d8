# Configuration and scan sheet: validated (with the schema's defaults filled in)
# before any job runs; paths from xafsflow.layout, products from the registry.
import json
import sys
from pathlib import Path

from xafsflow.campaign import load_campaign
from xafsflow.errors import InputError
from xafsflow.layout import Layout
from xafsflow.products import registry
from xafsflow.simulate.demo import DEMO_FILES

CONFIG_SOURCE = ", ".join(map(str, workflow.overwrite_configfiles)) or "config/config.yaml"
if workflow.config_settings.overwrite_config and not workflow.overwrite_configfiles:
    CONFIG_SOURCE += " (with --config)"

try:
    _demo = config.get("demo") or {}
    DEMO_DIR = _demo.get("directory", "resources/demo")
    DEMO_OUTPUTS = [f"{DEMO_DIR}/{name}" for name in DEMO_FILES] if _demo.get("generate") else []
    CAMPAIGN = load_campaign(config, produced=set(DEMO_OUTPUTS), source=CONFIG_SOURCE)
except InputError as exc:
    raise WorkflowError(f"invalid campaign: {exc}") from None

# The validated config, defaults filled in: what every rule reads.
CONFIG = CAMPAIGN.config
LAYOUT = CAMPAIGN.layout
PRODUCTS = registry()
PRODUCTS_BY_NAME = {p.name: p for p in PRODUCTS}
# Run the CLI with the interpreter that runs Snakemake (same environment on SLURM nodes).
XAFSFLOW = f"{sys.executable} -m xafsflow"
DASHBOARD = "--dashboard" if CONFIG["dask"]["dashboard"] else ""


wildcard_constraints:
    scan_id="[A-Za-z0-9][A-Za-z0-9_-]*",


def scan_of(wildcards):
    return CAMPAIGN.scan(wildcards.scan_id)


def raw_inputs(wildcards):
    return scan_of(wildcards).paths


def energies_input(wildcards):
    scan = scan_of(wildcards)
    return [scan.fields["energy"]] if scan.format == "tiff_stack" else []


def sheet_fields_json(wildcards):
    return json.dumps(scan_of(wildcards).fields, sort_keys=True)


def params_json(block):
    """params entry: the scan's resolved ``block`` (e.g. normalize) as JSON, for the step's --params."""
    def block_json(wildcards):
        params = scan_of(wildcards).params
        return json.dumps({block: params[block]} if block in params else {}, sort_keys=True)

    return block_json


def step_hash(step):
    """params entry: the hash of this step's own resolved parameters (a change reruns this step only)."""
    return lambda wildcards: CAMPAIGN.step_hash(wildcards.scan_id, step)


def is_stack(wildcards):
    return scan_of(wildcards).kind == "stack"


def product_targets(product):
    """Stores of ``product`` for every scan that gets it."""
    return [str(LAYOUT.product_store(product, s)) for s in CAMPAIGN.product_ids(product)]


def product_outputs(product):
    """Output patterns of a per-scan product rule: store, table and figure."""
    return dict(
        store=directory(str(LAYOUT.product_store(product, "{scan_id}"))),
        tsv=str(LAYOUT.product_table(product, "{scan_id}")),
        png=report(str(LAYOUT.product_figure(product, "{scan_id}")),
                   caption=f"../report/{product.name}.rst", category=product.name),
    )


ALL_PRODUCT_TARGETS = [t for p in PRODUCTS for t in product_targets(p)]
