# Configuration and scan sheet: validated before any job runs.
import json
import sys
from pathlib import Path

from snakemake.utils import validate

from xafsflow.campaign import load_campaign
from xafsflow.errors import InputError
from xafsflow.simulate.demo import DEMO_FILES

# The schema holds every default; validate() fills them in.
validate(config, "../schemas/config.schema.yaml")

DEMO_DIR = config["demo"]["directory"]
DEMO_OUTPUTS = [f"{DEMO_DIR}/{name}" for name in DEMO_FILES] if config["demo"]["generate"] else []

try:
    CAMPAIGN = load_campaign(config, produced=set(DEMO_OUTPUTS))
except InputError as exc:
    raise WorkflowError(f"invalid campaign: {exc}") from None

RESULTS = str(CAMPAIGN.results)
CONFIG_HASH = CAMPAIGN.config_hash
# Run the CLI with the interpreter that runs Snakemake (same environment on SLURM nodes).
XAFSFLOW = f"{sys.executable} -m xafsflow"


wildcard_constraints:
    scan_id="[A-Za-z0-9][A-Za-z0-9_-]*",


def scan_of(wildcards):
    return CAMPAIGN.scan(wildcards.scan_id)


def raw_inputs(wildcards):
    scan = scan_of(wildcards)
    return scan.paths


def energies_input(wildcards):
    scan = scan_of(wildcards)
    return [scan.fields["energy"]] if scan.format == "tiff_stack" else []


def sheet_fields_json(wildcards):
    return json.dumps(scan_of(wildcards).fields, sort_keys=True)


def params_json(wildcards):
    return json.dumps(scan_of(wildcards).params, sort_keys=True)


def is_stack(wildcards):
    return scan_of(wildcards).kind == "stack"


def posterior_ids():
    """Scans that get the posterior product (kind xanes, enabled in their parameters)."""
    return [s.scan_id for s in CAMPAIGN.scans if s.kind == "xanes" and s.params.get("posterior", {}).get("enabled")]


POSTERIOR_PRODUCTS = expand(f"{RESULTS}/posterior/{{scan_id}}.zarr", scan_id=posterior_ids())
