"""DAG build time of a big campaign: xafsflow's Snakefile next to a bare Snakefile of the same shape.

    .venv/bin/python benchmarks/bench_dag.py [--scans 5000] [--repeats 3] [--keep DIR]

1. Writes a campaign of N XANES scans in a working directory (a temporary one,
   or DIR with --keep): N copies of a real XDI file (raw/s00001.xdi, ...), the
   scan sheet scans.tsv and config.yaml. The sheet validator wants the raw
   files to exist, so they are generated here, never committed.
2. Times ``snakemake -n`` of the repository's Snakefile on that campaign (the
   full DAG: ingest, normalize, posterior per scan, summary, all).
3. Times ``snakemake -n`` of a bare Snakefile with rules of the same shape
   (same inputs, outputs, directory() outputs, log, benchmark, params) and no
   validation: scan ids read from the same sheet with the csv module.
4. Alternates the two R times; prints every time, the medians, the ratio of
   the medians (xafsflow / bare) and the smallest and largest ratio of a
   repeat, with the machine's facts. The CPU time (user + system) of each
   run is printed too: on a shared machine it moves less than wall time.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
XDI = Path(os.environ.get("XAFSFLOW_SHARED_DATA", REPO.parent / "shared" / "data")) / "xdi" / "fe2o3_rt.xdi"
CAMPAIGN = "bench"

BARE_SNAKEFILE = '''\
# Bare Snakemake, the shape of xafsflow's DAG: no validation, shell commands `true`.
import csv

with open("scans.tsv", newline="") as fh:
    SCANS = [row["scan_id"] for row in csv.DictReader(fh, delimiter="\\t")]
RAW = {s: f"raw/{s}.xdi" for s in SCANS}
ROOT = "results/bench"


wildcard_constraints:
    scan_id="[A-Za-z0-9][A-Za-z0-9_-]*",


rule all:
    input:
        f"{ROOT}/summary.tsv",
        expand(f"{ROOT}/posterior/{{scan_id}}.zarr", scan_id=SCANS),
    default_target: True


rule ingest:
    input:
        raw=lambda wc: RAW[wc.scan_id],
    output:
        directory(f"{ROOT}/raw/{{scan_id}}.zarr"),
    params:
        kind="xanes",
    log:
        f"{ROOT}/logs/ingest/{{scan_id}}.log",
    benchmark:
        f"{ROOT}/benchmarks/ingest/{{scan_id}}.tsv"
    shell:
        "true"


rule normalize:
    input:
        f"{ROOT}/raw/{{scan_id}}.zarr",
    output:
        store=directory(f"{ROOT}/scans/{{scan_id}}.zarr"),
        png=f"{ROOT}/scans/{{scan_id}}.png",
    params:
        analysis="normalize",
    log:
        f"{ROOT}/logs/normalize/{{scan_id}}.log",
    benchmark:
        f"{ROOT}/benchmarks/normalize/{{scan_id}}.tsv"
    shell:
        "true"


rule posterior:
    input:
        f"{ROOT}/scans/{{scan_id}}.zarr",
    output:
        store=directory(f"{ROOT}/posterior/{{scan_id}}.zarr"),
        tsv=f"{ROOT}/posterior/{{scan_id}}.tsv",
        png=f"{ROOT}/posterior/{{scan_id}}.png",
    params:
        analysis="posterior",
    threads: 2
    log:
        f"{ROOT}/logs/posterior/{{scan_id}}.log",
    benchmark:
        f"{ROOT}/benchmarks/posterior/{{scan_id}}.tsv"
    shell:
        "true"


rule summary:
    input:
        stores=expand(f"{ROOT}/scans/{{scan_id}}.zarr", scan_id=SCANS),
        products=expand(f"{ROOT}/posterior/{{scan_id}}.zarr", scan_id=SCANS),
        sheet="scans.tsv",
    output:
        tsv=f"{ROOT}/summary.tsv",
    log:
        f"{ROOT}/logs/summary/campaign.log",
    shell:
        "true"
'''


def write_campaign(work: Path, n: int) -> Path:
    """Raw files, scan sheet, config and the bare Snakefile in ``work``; returns the config path."""
    raw = work / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    data = XDI.read_bytes()
    rows = ["scan_id\tkind\tpath\tformat"]
    for i in range(1, n + 1):
        sid = f"s{i:05d}"
        (raw / f"{sid}.xdi").write_bytes(data)
        rows.append(f"{sid}\txanes\traw/{sid}.xdi\txdi")
    (work / "scans.tsv").write_text("\n".join(rows) + "\n")
    cfg = work / "config.yaml"
    cfg.write_text(f"campaign: {CAMPAIGN}\nscans: scans.tsv\ndemo: {{generate: false}}\n")
    (work / "Snakefile.bare").write_text(BARE_SNAKEFILE)
    return cfg


def dry_run(work: Path, snakefile: Path, configfile: Path | None) -> tuple[float, float]:
    """Wall and CPU (user + system) time of one ``snakemake -n`` in seconds; exits on failure."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(snakefile), "--directory", str(work)]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    cmd += ["--cores", "2", "--quiet"]
    env = dict(os.environ, NUMBA_CACHE_DIR=str(work / ".numba_cache"))
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=work)
    dt = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return dt, cpu


def machine() -> list[str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    smk = subprocess.run([sys.executable, "-m", "snakemake", "--version"], capture_output=True, text=True)
    git = ["git", "-C", str(REPO)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "Snakefile", "workflow", "src"],
                           capture_output=True, text=True).stdout.strip()
    return [
        f"xafsflow: commit {head or '?'}{' + uncommitted changes in Snakefile/workflow/src' if dirty else ''}",
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu!r}",
        f"python {platform.python_version()}, snakemake {smk.stdout.strip()}, {platform.platform()}",
        f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
    ]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", type=int, default=5000, help="number of scans (default 5000)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each Snakefile (default 3)")
    ap.add_argument("--keep", type=Path, help="build the campaign in DIR and keep it")
    args = ap.parse_args(argv)

    if args.keep:
        work = args.keep.resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="bench_dag_"))
    try:
        for line in machine():
            print(line)
        t = time.perf_counter()
        cfg = write_campaign(work, args.scans)
        print(f"campaign: {args.scans} scans in {work} ({time.perf_counter() - t:.1f} s to write)")

        if args.repeats < 1:
            return
        xf, bare, xf_cpu, bare_cpu = [], [], [], []
        for r in range(args.repeats):
            for times, cpus, snakefile, configfile in ((xf, xf_cpu, REPO / "Snakefile", cfg),
                                                       (bare, bare_cpu, work / "Snakefile.bare", None)):
                wall, cpu = dry_run(work, snakefile, configfile)
                times.append(wall)
                cpus.append(cpu)
            print(f"repeat {r + 1}: xafsflow {xf[-1]:.2f} s (cpu {xf_cpu[-1]:.2f}), "
                  f"bare {bare[-1]:.2f} s (cpu {bare_cpu[-1]:.2f}), ratio {xf[-1] / bare[-1]:.2f}", flush=True)
        ratios = [a / b for a, b in zip(xf, bare)]
        mx, mb = statistics.median(xf), statistics.median(bare)
        cx, cb = statistics.median(xf_cpu), statistics.median(bare_cpu)
        print(f"median wall: xafsflow {mx:.2f} s, bare {mb:.2f} s")
        print(f"ratio of medians (xafsflow / bare): {mx / mb:.2f} (goal <= 1.2); "
              f"per repeat min {min(ratios):.2f}, max {max(ratios):.2f}")
        print(f"median cpu (user + sys): xafsflow {cx:.2f} s, bare {cb:.2f} s, ratio {cx / cb:.2f}")
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
