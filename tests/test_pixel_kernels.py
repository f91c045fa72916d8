"""The one-pass numba normalization of stack blocks against its NumPy reference, normalize_edge, column by column.

Every expected number comes from :func:`xafsflow.xas.normalize.normalize_edge` (and its ``find_e0``) run on one
column at a time; a column it refuses (AnalysisInputError) must come out NaN.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from xafsflow.errors import AnalysisInputError
from xafsflow.imaging import pixels as px
from xafsflow.simulate import forward as fw
from xafsflow.xas.normalize import normalize_edge

TOL = 1e-10  # eV for E0; relative for the edge step; absolute for norm and flat (order 1)
PARAMS = {"pre1": -70.0, "pre2": -20.0, "norm1": 40.0, "nnorm": 1}  # the benchmark's micro-XANES windows


def _grid(kind: str) -> np.ndarray:
    if kind == "irregular":  # XANES-like: coarse pre-edge, fine edge, coarser post-edge
        return np.r_[np.linspace(7030.0, 7100.0, 30), np.linspace(7100.5, 7140.0, 60), np.linspace(7141.0, 7290.0, 40)]
    if kind == "micro":  # the benchmark's micro-XANES grid: 5 eV, 0.5 eV through the edge, 5 eV
        return np.r_[np.arange(7030.0, 7096.0, 5.0), np.arange(7100.0, 7135.25, 0.5), np.arange(7140.0, 7211.0, 5.0)]
    return np.linspace(7030.0, 7290.0, 100)


def _spectra(e, n=70, seed=1, noise=0.02):
    r = np.random.default_rng(seed)
    mu = np.stack([fw.xanes_normalized(e, 7105.0 + 10 * r.random(), 2.0, 3.0, 2.0, 4.0, 0.5, [])
                   for _ in range(n)], axis=1)
    return 0.3 + 1e-4 * (e[:, None] - 7030.0) + mu * r.uniform(0.5, 1.5, n) + r.normal(0.0, noise, mu.shape)


def _reference(e, mu, params):
    """normalize_edge column by column; NaN for a column it refuses."""
    n_e, m = mu.shape
    out = {"e0": np.full(m, np.nan), "edge_step": np.full(m, np.nan), "norm": np.full((n_e, m), np.nan),
           "flat": np.full((n_e, m), np.nan)}
    e0 = params.get("e0")
    for j in range(m):
        kw = dict(params)
        if e0 is not None and np.ndim(e0):
            kw["e0"] = e0[j]
        try:
            res = normalize_edge(e, mu[:, j], **kw)
        except AnalysisInputError:
            continue
        out["e0"][j], out["edge_step"][j], out["norm"][:, j], out["flat"][:, j] = (res.e0, res.edge_step, res.norm,
                                                                                   res.flat)
    return out


def _kernel(e, mu, params, cube_dtype=np.float64):
    n_e, m = mu.shape
    got = {"e0": np.empty(m), "edge_step": np.empty(m), "norm": np.empty((n_e, m), cube_dtype),
           "flat": np.empty((n_e, m), cube_dtype)}
    px.normalize_block_into(mu, e, params, got["e0"], got["edge_step"], got["norm"], got["flat"])
    return got


def _assert_equal(got, ref, tol=TOL):
    for name in ("e0", "edge_step", "norm", "flat"):
        np.testing.assert_array_equal(np.isnan(got[name]), np.isnan(ref[name]), err_msg=f"{name}: refused pixels")
    np.testing.assert_allclose(got["e0"], ref["e0"], rtol=0, atol=tol, err_msg="e0")
    np.testing.assert_allclose(got["edge_step"], ref["edge_step"], rtol=tol, atol=0, err_msg="edge_step")
    np.testing.assert_allclose(got["norm"], ref["norm"], rtol=0, atol=tol, err_msg="norm")
    np.testing.assert_allclose(got["flat"], ref["flat"], rtol=0, atol=tol, err_msg="flat")


@pytest.mark.parametrize("grid", ["irregular", "uniform", "micro"])
@pytest.mark.parametrize("nnorm", [0, 1, 2, 3])
@pytest.mark.parametrize("smooth_ev", [0.0, 0.5, 2.0])
def test_found_e0_equals_normalize_edge(grid, nnorm, smooth_ev):
    """E0 found in the kernel (operator rows), windows, fits, step, norm, flat: normalize_edge's numbers."""
    e = _grid(grid)
    mu = _spectra(e, n=37)  # not a multiple of the kernel's tile
    params = {"pre1": -60.0, "pre2": -20.0, "norm1": 35.0, "nnorm": nnorm, "smooth_ev": smooth_ev}
    ref = _reference(e, mu, params)
    assert np.isfinite(ref["edge_step"]).all()
    _assert_equal(_kernel(e, mu, params), ref)


@pytest.mark.parametrize("norm2", [None, 120.0, 400.0])
def test_given_e0_scalar_and_per_pixel(norm2):
    e = _grid("irregular")
    mu = _spectra(e, n=40, seed=2)
    r = np.random.default_rng(3)
    for e0 in (7110.0, 7104.0 + 12.0 * r.random(40)):
        params = {"e0": e0, "pre1": -70.0, "pre2": -25.0, "norm1": 40.0, "norm2": norm2, "nnorm": 2}
        _assert_equal(_kernel(e, mu, params), _reference(e, mu, params))


def test_refused_pixels_are_nan_and_the_others_unchanged():
    """Non-finite mu, no edge (flat), a falling edge, E0 outside the data or too close to its ends, a pre-edge
    window that must be extended to e0 - 15 eV (scan starting near the edge): as normalize_edge, column by column."""
    e = _grid("irregular")
    mu = _spectra(e, n=48, seed=5)
    mu[10, 3] = np.nan
    mu[:, 5] = np.inf
    mu[:, 7] = 0.4  # flat: no edge step
    mu[:, 9] = 2.0 - mu[:, 9]  # falling edge
    e0 = np.full(48, 7110.0)
    e0[11], e0[12], e0[13], e0[14] = 7000.0, 7300.0, np.nan, 7265.0  # outside, outside, NaN, post window empty
    e0[15], e0[16] = 7042.0, 7080.0  # pre window at the scan start: extended (7080) or not enough points
    params = {"e0": e0, "pre1": -60.0, "pre2": -40.0, "norm1": 30.0, "nnorm": 1}
    ref = _reference(e, mu, params)
    assert np.isnan(ref["edge_step"][[3, 5, 7, 9, 11, 12, 13, 14]]).all()
    assert np.isfinite(ref["edge_step"][16])  # normalize_edge extends that pre-edge window
    _assert_equal(_kernel(e, mu, params), ref)
    found = {k: v for k, v in params.items() if k != "e0"}  # and with E0 found
    _assert_equal(_kernel(e, mu, found), _reference(e, mu, found))


def test_float32_in_and_out():
    """float32 mu is read as float64 values; float32 norm/flat are the float64 results rounded once."""
    e = _grid("micro")
    mu32 = _spectra(e, n=50, seed=7, noise=0.01).astype(np.float32)
    params = {"pre1": -70.0, "pre2": -20.0, "norm1": 40.0, "nnorm": 1}
    ref = _reference(e, mu32.astype(np.float64), params)
    _assert_equal(_kernel(e, mu32, params), ref)
    got = _kernel(e, mu32, params, np.float32)
    np.testing.assert_allclose(got["e0"], ref["e0"], rtol=0, atol=TOL)
    np.testing.assert_allclose(got["edge_step"], ref["edge_step"], rtol=TOL)
    for name in ("norm", "flat"):  # one rounding to float32 (half an ulp, plus the float64 difference)
        np.testing.assert_allclose(got[name], ref[name], rtol=2 ** -24 + TOL, atol=TOL, err_msg=name)


def test_fine_grid_falls_back_to_find_e0():
    """A grid too fine for the E0 operator: E0 from find_e0, the rest in the kernel."""
    e = np.linspace(7000.0, 7400.0, 2000)
    e[1] = e[0] + 1e-3  # finest step 1 meV: no operator is built
    assert px._e0_operator_rows(e, 0.5) is None
    mu = np.stack([fw.xanes_normalized(e, 7150.0 + j, 2.0, 3.0, 2.0, 4.0, 0.5, []) for j in range(5)], axis=1)
    mu[:, 2] = np.nan
    params = {"pre1": -100.0, "pre2": -30.0, "norm1": 50.0, "nnorm": 2}
    _assert_equal(_kernel(e, mu, params), _reference(e, mu, params))


def test_empty_block_and_numpy_path_agree():
    e = _grid("uniform")
    got = _kernel(e, np.zeros((e.size, 0)), {"nnorm": 1})
    assert got["norm"].shape == (e.size, 0)
    mu = _spectra(e, n=33, seed=9)
    mu[:, 4] = 0.5
    params = {"pre1": -60.0, "pre2": -20.0, "norm1": 40.0, "nnorm": 2}
    packed = px._normalize_block_tolerant(mu, e, params)
    ref = px._normalize_block_numpy(mu, e, params)
    np.testing.assert_array_equal(np.isnan(packed), np.isnan(ref))
    np.testing.assert_allclose(packed, ref, rtol=TOL, atol=TOL)


def test_stack_float32_cubes_keep_float64_planes():
    """normalize_stack_tolerant(cube_dtype=float32): e0 and edge step bit for bit those of the float64 path."""
    e = _grid("micro")
    mu = _spectra(e, n=90, seed=11, noise=0.01).astype(np.float32)
    mu[:, 17] = np.nan
    arr = da.from_array(mu, chunks=(e.size, 25))
    params = {"pre1": -70.0, "pre2": -20.0, "norm1": 40.0, "nnorm": 1}
    r64 = dict(zip(("e0", "edge_step", "norm", "flat"),
                   da.compute(*px.normalize_stack_tolerant(e, arr, **params).values())))
    r32 = px.normalize_stack_tolerant(e, arr, cube_dtype=np.float32, **params)
    assert r32["norm"].dtype == np.float32 and r32["e0"].dtype == np.float64
    r32 = dict(zip(r32, da.compute(*r32.values())))
    np.testing.assert_array_equal(r32["e0"], r64["e0"])
    np.testing.assert_array_equal(r32["edge_step"], r64["edge_step"])
    np.testing.assert_array_equal(r32["norm"], r64["norm"].astype(np.float32))
    np.testing.assert_array_equal(r32["flat"], r64["flat"].astype(np.float32))
    assert np.isnan(r32["edge_step"][17]) and np.isfinite(np.delete(r32["edge_step"], 17)).all()


def test_too_few_energies_to_find_e0_refuses_every_pixel():
    """Eight energies: find_e0 (and normalize_edge without e0) refuses them; every pixel NaN, as before."""
    e = np.linspace(7080.0, 7150.0, 8)
    mu = np.stack([0.3 + 0.5 * (e > 7110.0 + j) for j in range(4)], axis=1)
    params = {"pre1": -30.0, "pre2": -10.0, "norm1": 10.0, "nnorm": 0}
    ref = _reference(e, mu, params)
    assert np.isnan(ref["edge_step"]).all()
    _assert_equal(_kernel(e, mu, params), ref)


def test_normalize_stack_into_writes_what_the_reference_computes(tmp_path):
    """normalize_stack_into (each task writes its block) on a 3-D stack into a Zarr store and into NumPy
    arrays: norm, flat and both maps equal normalize_edge column by column, NaN where it refuses."""
    from xafsflow.io import store as st

    e = _grid("micro")
    ny, nx = 8, 70  # blocks of 4 rows: 280 pixels, more than one tile of the kernel (256)
    mu = _spectra(e, n=ny * nx, seed=12, noise=0.01)
    mu[:, 20] = np.nan
    mu[:, 31] = 0.4  # no edge: refused
    mu[:, 300] = np.nan  # in the second block's second tile
    ref = _reference(e, mu, PARAMS)
    cube = mu.reshape(e.size, ny, nx)
    arr = da.from_array(cube, chunks=(e.size, 4, nx))
    with st.atomic_store(tmp_path / "n.zarr") as g:
        targets = [st.create_array(g, name, cube.shape, np.float64, ("energy", "y", "x"), (e.size, 4, nx))
                   for name in ("norm", "flat")]
        e0, step = px.normalize_stack_into(e, arr, *targets, **PARAMS)
    g = st.open_store(tmp_path / "n.zarr")
    got = {"e0": e0.ravel(), "edge_step": step.ravel(), "norm": g["norm"][...].reshape(e.size, -1),
           "flat": g["flat"][...].reshape(e.size, -1)}
    _assert_equal(got, ref)
    assert np.isnan(got["edge_step"][[20, 31, 300]]).all()
    # float32 cubes from float64 input: the float64 results rounded once; the maps unchanged
    norm, flat = np.empty(cube.shape, np.float32), np.empty(cube.shape, np.float32)
    e0_32, step_32 = px.normalize_stack_into(e, arr, norm, flat, **PARAMS)
    np.testing.assert_array_equal(e0_32, e0)
    np.testing.assert_array_equal(step_32, step)
    np.testing.assert_array_equal(norm, g["norm"][...].astype(np.float32))
    np.testing.assert_array_equal(flat, g["flat"][...].astype(np.float32))


def test_normalize_stack_into_refuses_blocks_that_share_a_chunk(tmp_path):
    from xafsflow.io import store as st

    e = _grid("micro")
    cube = _spectra(e, n=24, seed=13).reshape(e.size, 4, 6)
    with st.atomic_store(tmp_path / "n.zarr") as g:
        targets = [st.create_array(g, name, cube.shape, np.float32, ("energy", "y", "x"), (e.size, 2, 6))
                   for name in ("norm", "flat")]
        with pytest.raises(ValueError, match="rechunk mu to multiples of 2"):
            px.normalize_stack_into(e, da.from_array(cube, chunks=(e.size, 3, 6)), *targets, **PARAMS)
        with pytest.raises(ValueError, match="must be equal"):
            px.normalize_stack_into(e, da.from_array(cube[:, :2], chunks=(e.size, 2, 6)), *targets, **PARAMS)
    # an in-memory stack (one block) into NumPy targets (no chunks): the maps of any chunking
    norm, flat = np.empty(cube.shape), np.empty(cube.shape)
    e0_mem, _ = px.normalize_stack_into(e, cube, norm, flat, **PARAMS)
    e0_dask, _ = px.normalize_stack_into(e, da.from_array(cube, chunks=(e.size, 1, 6)), np.empty(cube.shape),
                                         np.empty(cube.shape), **PARAMS)
    np.testing.assert_array_equal(e0_mem, e0_dask)


def test_failed_stack_normalization_leaves_no_store(tmp_path, monkeypatch):
    """One block fails while others are still running: the step raises, and neither the store nor its
    temporary reappears afterwards (the running tasks finish before the temporary store is removed)."""
    import time

    from xafsflow.io import store as st
    from xafsflow.steps import normalize

    e = _grid("micro")
    cube = _spectra(e, n=8 * 20, seed=14, noise=0.01).reshape(e.size, 8, 20).astype(np.float32)
    with st.atomic_store(tmp_path / "raw.zarr") as g:
        st.put_array(g, "energy", e, ("energy",), attrs={"units": "eV"})
        st.put_array(g, "mu", cube, ("energy", "y", "x"), chunks=(e.size, 2, 20))
        st.set_attrs(g, scan_id="s", kind="stack", format="tiff_stack", element="Fe", edge="K")
    real = px.normalize_block_into

    def slow_or_failing(mu_block, *args):
        if mu_block.shape[1] == 40 and np.array_equal(mu_block[:, 0], cube[:, 0, 0]):
            raise RuntimeError("block 0 fails")
        time.sleep(0.5)  # the other blocks are still being written when block 0 fails
        return real(mu_block, *args)

    monkeypatch.setattr(px, "normalize_block_into", slow_or_failing)
    with pytest.raises(RuntimeError, match="block 0 fails"):
        normalize(tmp_path / "raw.zarr", tmp_path / "n.zarr", {"normalize": PARAMS}, threads=2)
    time.sleep(1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.zarr"]
