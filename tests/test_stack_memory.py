"""A stack larger than the memory given to the Dask worker still goes through, in chunks."""

from __future__ import annotations

import numpy as np
import pytest

from xafsflow.io import store as st
from xafsflow.io.store import open_store
from xafsflow.simulate import forward as fw
from xafsflow.steps import normalize


def _spectrum_block(block_info=None, energies=None):
    """Synthetic pixels for one chunk, computed from the chunk location (never the whole stack)."""
    loc = block_info[None]["array-location"]
    (y0, y1), (x0, x1) = loc[1], loc[2]
    yy, xx = np.mgrid[y0:y1, x0:x1]
    step = 0.5 + 0.5 * ((yy * 7 + xx * 3) % 11) / 10.0  # known per-pixel edge step
    spec = fw.xanes_normalized(energies, 7112.0, 2.0, 3.0, 2.0, 4.0, 0.5, [])
    return (0.2 + spec[:, None, None] * step[None]).astype(np.float32)


@pytest.mark.workflow
@pytest.mark.parametrize("scheduler", ["threads", "cluster"])
def test_stack_larger_than_worker_memory(tmp_path, scheduler):
    """Both step schedulers (config dask.step_scheduler): the cluster's worker gets 500 MB (a worker process
    with numba's compiled kernels loaded already holds about 270 MB, above the 80 % pause threshold of a
    350 MB worker); on the threaded scheduler the step's own allocations (traced) stay below 350 MB. The
    stack is larger than either. Same output either way."""
    import tracemalloc

    import dask.array as da

    energies = np.linspace(7030.0, 7290.0, 100)
    ny, nx = 1280, 1000  # 100 x 1280 x 1000 float32 = 512 MB raw, 1 GB as float64
    chunks = (energies.size, 16, nx)
    lazy = da.map_blocks(_spectrum_block, energies=energies, chunks=((energies.size,), (16,) * (ny // 16), (nx,)),
                         dtype=np.float32)
    raw = tmp_path / "raw.zarr"
    with st.atomic_store(raw) as g:
        st.put_array(g, "energy", energies, ("energy",))
        target = st.create_array(g, "mu", lazy.shape, np.float32, ("energy", "y", "x"), chunks)
        da.store(lazy, target, lock=False)
        st.set_attrs(g, scan_id="big", kind="stack", format="tiff_stack", element="Fe", edge="K",
                     **{st.PROVENANCE_KEY: st.provenance("ingest")})
    out = tmp_path / "norm.zarr"
    params = {"normalize": {"pre1": -80.0, "pre2": -25.0, "norm1": 50.0, "nnorm": 1}}
    # one worker limited to 500 MB (threads: 350 MB traced): the stack does not fit in it
    mem_mb = 500 if scheduler == "cluster" else 350
    assert ny * nx * energies.size * 4 > mem_mb * 1e6
    tracemalloc.start()
    try:
        normalize(raw, out, params, threads=1, mem_mb=mem_mb, scheduler=scheduler)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    if scheduler == "threads":
        assert peak < 350e6, f"peak traced allocation {peak / 1e6:.0f} MB"
    g = open_store(out)
    yy, xx = np.mgrid[0:ny, 0:nx]
    truth_rel = (0.5 + 0.5 * ((yy * 7 + xx * 3) % 11) / 10.0)
    stepmap = g["edge_step"][...]
    # the normalization is linear in the step: every pixel's step is its known factor times one constant
    ratio = stepmap / truth_rel
    assert np.ptp(ratio) < 1e-4 * np.mean(ratio)
    assert np.isfinite(g["norm"][:, ny - 1, nx - 1]).all()


def test_threads_and_cluster_give_identical_stores(tmp_path):
    """The normalize step's output does not depend on where its graph runs."""
    import dask.array as da

    energies = np.linspace(7030.0, 7290.0, 60)
    lazy = da.map_blocks(_spectrum_block, energies=energies, chunks=((energies.size,), (8,) * 4, (40,)),
                         dtype=np.float32)
    raw = tmp_path / "raw.zarr"
    with st.atomic_store(raw) as g:
        st.put_array(g, "energy", energies, ("energy",))
        target = st.create_array(g, "mu", lazy.shape, np.float32, ("energy", "y", "x"), (energies.size, 8, 40))
        da.store(lazy, target, lock=False)
        st.set_attrs(g, scan_id="small", kind="stack", format="tiff_stack", element="Fe", edge="K",
                     **{st.PROVENANCE_KEY: st.provenance("ingest")})
    params = {"normalize": {"pre1": -80.0, "pre2": -25.0, "norm1": 50.0, "nnorm": 1}}
    stores = {}
    for scheduler in ("threads", "cluster"):  # 500 MB per worker: a worker with numba loaded holds ~270 MB
        normalize(raw, tmp_path / f"{scheduler}.zarr", params, threads=2, mem_mb=1000, scheduler=scheduler)
        stores[scheduler] = open_store(tmp_path / f"{scheduler}.zarr")
    for name in ("norm", "flat", "e0", "edge_step"):
        np.testing.assert_array_equal(stores["threads"][name][...], stores["cluster"][name][...], err_msg=name)
    with pytest.raises(ValueError, match="step scheduler"):
        normalize(raw, tmp_path / "x.zarr", params, scheduler="processes")
