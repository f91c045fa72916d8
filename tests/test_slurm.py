"""The demo campaign through profiles/slurm on a real one-node SLURM cluster on this machine.

`.ci/slurm-up.sh` configures and starts munge, slurmctld and slurmd (idempotent).
The test skips, with the reason, only when not root or SLURM is not installed or
cannot start; under CI (CI=true) it must run and fails instead of skipping.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from conftest import REPO, run_snakemake
from xafsflow.io.store import read_provenance

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"SLURM test must run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm_cluster():
    if os.geteuid() != 0:
        _unavailable("not root: cannot start slurmctld/slurmd")
    if not (shutil.which("slurmctld") and shutil.which("slurmd") and shutil.which("munged")):
        _unavailable("SLURM daemons not installed (apt-get install slurm-wlm munge; .ci/run does this)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    p = subprocess.run(["bash", str(REPO / ".ci" / "slurm-up.sh")], capture_output=True, text=True, timeout=300,
                       env=env)
    if p.returncode != 0:
        _unavailable(f"SLURM daemons could not start:\n{p.stderr[-3000:]}")
    return True


def test_demo_campaign_runs_under_slurm(slurm_cluster, workdir):
    p = run_snakemake(
        workdir, "--profile", str(REPO / "profiles" / "slurm"),
        "--configfile", "tests/scenarios/slurm-demo/config.yaml",
        "--jobs", "4", "--slurm-no-account", "--slurm-status-command", "squeue",
        "--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "10",
        timeout=900,
    )
    assert p.returncode == 0, (p.stdout[-3000:] + p.stderr[-6000:])
    res = workdir / "results" / "demo"
    # one scan of each kind: 5 scan stores and every product's stores (the domain model included)
    stores = sorted(p for p in res.glob("*/*.zarr") if p.parent.name not in ("raw", "checkpoints"))
    assert len(list((res / "scans").glob("*.zarr"))) == 5
    assert len(list((res / "posterior").glob("*.zarr"))) == 2  # the XANES scan and the XMCD pair
    assert {p.parent.name for p in stores} == {"scans", "posterior", "sparse-structure", "segmentation",
                                                 "domain-parameter"}
    assert (res / "summary.tsv").is_file() and (res / "report.html").is_file()
    # every product was made inside a SLURM job, whose log Snakemake's plugin kept
    log_ids = {m.group(1) for f in (workdir / ".snakemake" / "slurm_logs").rglob("*.log")
               if (m := re.fullmatch(r"(\d+)\.log", f.name))}
    assert log_ids, "no SLURM job logs"
    job_ids = set()
    for s in stores:
        jid = read_provenance(s).get("slurm_job_id")
        assert jid and jid.isdigit(), f"{s} not made under SLURM"
        job_ids.add(jid)
    assert job_ids <= log_ids
    assert len(job_ids) == len(stores)  # one job per product
