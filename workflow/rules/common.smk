# Configuration and scan sheet: validated (with the schema's defaults filled in)
# before any job runs; paths from xafsflow.layout, products from the registry.
import json
import shlex
import sys
from pathlib import Path

from xafsflow.campaign import load_campaign, stack_side_fields
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
STEP_SCHEDULER = f"--scheduler {CONFIG['dask']['step_scheduler']}"


wildcard_constraints:
    scan_id="[A-Za-z0-9][A-Za-z0-9_-]*",


def scan_of(wildcards):
    return CAMPAIGN.scan(wildcards.scan_id)


# Each job's variable arguments come from ONE callable per rule: Snakemake inspects
# every callable of every job, so on a campaign of thousands of scans fewer
# callables build the DAG markedly faster (benchmarks/bench_dag.py).
def ingest_inputs(wildcards):
    scan = scan_of(wildcards)
    return {"raw": scan.paths, "side": [scan.fields[f] for f in stack_side_fields(scan.format) if f in scan.fields]}


def _block_json(scan, block):
    """The scan's resolved ``block`` (e.g. normalize) as JSON, for the step's --params."""
    return json.dumps({block: scan.params[block]} if block in scan.params else {}, sort_keys=True)


def ingest_args(wildcards):
    """Arguments of `xafsflow ingest` for one scan, with the hash of what it depends on."""
    scan = scan_of(wildcards)
    energies = (f" --energies {shlex.quote(scan.fields['energy'])}" if scan.format in ("tiff_stack", "tiff_folder")
                else "")
    return (f"--kind {scan.kind} --format {scan.format}"
            f" --fields {shlex.quote(json.dumps(scan.fields, sort_keys=True))}{energies}"
            f" --params-hash {CAMPAIGN.step_hash(scan.scan_id, 'ingest')}")


def step_args(step, block):
    """params entry: `--params <block JSON> --params-hash <hash of this step's own parameters>`.

    The hash changes only with this step's resolved parameters (and code
    version), so a change reruns this step and what depends on it, nothing else.
    """

    def args(wildcards):
        scan = scan_of(wildcards)
        return (f"--params {shlex.quote(_block_json(scan, block))}"
                f" --params-hash {CAMPAIGN.step_hash(scan.scan_id, step)}")

    return args


def stack_or(stack_value, other):
    """Resource or thread count: ``stack_value`` for image stacks, ``other`` for the rest."""
    return lambda wildcards: stack_value if scan_of(wildcards).kind == "stack" else other


def product_targets(product):
    """Stores of ``product`` for every scan that gets it (a campaign-level product: its one store)."""
    if product.campaign_level:
        return [str(LAYOUT.product_store(product, product.campaign_id))] if CAMPAIGN.product_ids(product) else []
    return [str(LAYOUT.product_store(product, s)) for s in CAMPAIGN.product_ids(product)]


def product_outputs(product):
    """Output patterns of a per-scan product rule: store, table and figure."""
    return dict(
        store=directory(str(LAYOUT.product_store(product, "{scan_id}"))),
        tsv=str(LAYOUT.product_table(product, "{scan_id}")),
        png=report(str(LAYOUT.product_figure(product, "{scan_id}")),
                   caption=f"../report/{product.name}.rst", category=product.name),
    )


# ---- campaign-level products (one store per campaign, named <directory>/<campaign_id>.zarr)
def campaign_outputs(product):
    """Outputs of a campaign-level product rule: store, table and figure."""
    cid = product.campaign_id
    return dict(
        store=directory(str(LAYOUT.product_store(product, cid))),
        tsv=str(LAYOUT.product_table(product, cid)),
        png=report(str(LAYOUT.product_figure(product, cid)),
                   caption=f"../report/{product.name}.rst", category=product.name),
    )


def campaign_args(product):
    """`--params <kind block JSON> --params-hash <hash>` of a campaign-level product (its block, the
    seed and its version only: xafsflow.products._common.campaign_params_hash)."""
    from xafsflow.products._common import campaign_block, campaign_params_hash

    block = campaign_block(product, CONFIG)
    return (f"--params {shlex.quote(json.dumps({product.params_key: block}, sort_keys=True))}"
            f" --params-hash {campaign_params_hash(product, CONFIG)}")


ALL_PRODUCT_TARGETS = [t for p in PRODUCTS for t in product_targets(p)]


# ---- segment: its job takes the scan's nmf store only when the NMF abundances are features
def segment_nmf_store(wildcards):
    """The scan's nmf store when its segment block uses the NMF abundances, else None."""
    scan = scan_of(wildcards)
    if scan.params[PRODUCTS_BY_NAME["segment"].params_key]["abundances"]:
        return str(LAYOUT.product_store(PRODUCTS_BY_NAME["nmf"], scan.scan_id))
    return None


def segment_inputs(wildcards):
    """The scan store, and the nmf store only when the abundances are features."""
    nmf = segment_nmf_store(wildcards)
    return {"scan": str(LAYOUT.scan_store(wildcards.scan_id)), **({"nmf": nmf} if nmf else {})}


def segment_nmf_arg(wildcards):
    """`--nmf-store <store>` of the segment command when the abundances are features, else nothing."""
    nmf = segment_nmf_store(wildcards)
    return f"--nmf-store {shlex.quote(nmf)}" if nmf else ""
