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
def test_stack_larger_than_worker_memory(tmp_path):
    import dask.array as da

    energies = np.linspace(7030.0, 7290.0, 100)
    ny, nx = 640, 1000  # 100 x 640 x 1000 float32 = 256 MB raw, 512 MB as float64 in the fits
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
    # one worker limited to 350 MB: the stack (and certainly its float64 fits) does not fit in it
    normalize(raw, out, params, threads=1, mem_mb=350)
    g = open_store(out)
    yy, xx = np.mgrid[0:ny, 0:nx]
    truth_rel = (0.5 + 0.5 * ((yy * 7 + xx * 3) % 11) / 10.0)
    stepmap = g["edge_step"][...]
    # the normalization is linear in the step: every pixel's step is its known factor times one constant
    ratio = stepmap / truth_rel
    assert np.ptp(ratio) < 1e-4 * np.mean(ratio)
    assert np.isfinite(g["norm"][:, ny - 1, nx - 1]).all()
