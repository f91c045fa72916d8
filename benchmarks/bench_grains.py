"""Time of the segment job's per-grain spectroscopy on the demo's stacks (no peer: a budget check).

Simulates the demo's two stacks (as ``xafsflow simulate demo`` does), ingests,
normalizes them with the demo config's normalization and segments them on the
spectral features (reg_covar 0.01; the demo adds NMF abundances) with the grain
step off, then times :func:`xafsflow.products.segment.grain_step` (grain spectra
and every grain's posterior at the schema's ``grains`` defaults) ``--repeats``
times per stack in this process (the first repeat also loads the numba cache, as
every segment job does). Prints seconds per repeat, the load average before and
after, and the grains' R-hat and interval widths.

    PYTHONPATH=src python benchmarks/bench_grains.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from xafsflow.campaign import kind_params
    from xafsflow.imaging.grain_spectra import find_grains
    from xafsflow.io.store import open_store
    from xafsflow.products import segment as seg
    from xafsflow.seeds import rng
    from xafsflow.simulate.demo import _write_stack
    from xafsflow.steps import ingest, normalize

    repo = Path(__file__).resolve().parents[1]
    stack_cfg = yaml.safe_load((repo / "config" / "config.yaml").read_text())["analysis"]["stack"]
    seed = 20261127
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for name in ("stack_01", "stack_02"):
            _write_stack(d, name, "tiff", rng(seed, name, "simulate"))
            ingest(name, "stack", "tiff_stack", [str(d / f"{name}.tif")], d / f"{name}.raw.zarr",
                   energies=str(d / f"{name}_energies.txt"), chunk_pixels=512)
            params = kind_params("stack", {"normalize": stack_cfg["normalize"],
                                           "segment": {"reg_covar": 0.01, "grains": {"enabled": False}}})
            normalize(d / f"{name}.raw.zarr", d / f"{name}.zarr", params)
            seg.run_segment(d / f"{name}.zarr", d / f"{name}.mrf.zarr", d / f"{name}.tsv", d / f"{name}.png",
                            params, name, seed)
            labels = open_store(d / f"{name}.mrf.zarr")["labels"][...]
            gp = kind_params("stack", {})["segment"]["grains"]
            grain_map, table = find_grains(labels, 4)
            analysed = [t for t in table if t[2] >= gp["min_area"]]
            secs = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                out = seg.grain_step(d / f"{name}.zarr", grain_map, analysed, gp, seed, name)
                secs.append(time.perf_counter() - t0)
            res = out[4]
            print(f"{name}: {len(analysed)} grains, seconds per repeat {[round(s, 2) for s in secs]}, "
                  f"max R-hat {max(r.max_rhat for r in res):.3f}, interval widths (eV) "
                  f"{np.round([r.edge['q_hi'] - r.edge['q_lo'] for r in res], 3).tolist()}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
