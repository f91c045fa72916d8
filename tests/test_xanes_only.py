"""XANES-only scans: normalization windows clamped to the data.

Real Fe K-edge files from ../shared/data/xdi are cut to start 30 eV below
their edge (as a XANES-only scan does); the default pre-edge window
[e0-150, e0-30] eV then holds at most one point. The expected behaviour comes
from the rule documented in :func:`xafsflow.xas.normalize_edge` and from an
independent implementation, xraylarch's ``pre_edge``, given the same e0 and
the same clamped windows. No expected number is copied from our own output.
"""

from __future__ import annotations

import numpy as np
import pytest

from xafsflow.errors import AnalysisInputError
from xafsflow.io.store import open_store, read_provenance
from xafsflow.io.xdi import energy_axis, read_xdi
from xafsflow.schemas import analysis_defaults
from xafsflow.steps import ingest, normalize, spectrum_flags
from xafsflow.xas import find_e0, normalize_edge, normalize_stack
from xafsflow.xas.normalize import PRE_EDGE_MIN_GAP

FE_FILES = ["fe2o3_rt", "feo_rt1"]
CUT_EV = 30.0  # the cut scans start this far below the edge of the full scan


def load(shared, name):
    """Energy (eV) and mutrans of a real XDI file, read by xafsflow's reader."""
    xdi = read_xdi(shared / "xdi" / f"{name}.xdi")
    energy, _ = energy_axis(xdi)
    return energy, xdi.column("mutrans")


def cut_below(energy, mu, start):
    keep = energy >= start
    return energy[keep], mu[keep]


def xanes_only(shared, name):
    """The file cut to start CUT_EV below the edge of the full scan."""
    energy, mu = load(shared, name)
    return cut_below(energy, mu, find_e0(energy, mu) - CUT_EV)


def larch_pre_edge(energy, mu, e0, pre1, pre2, norm1, norm2, nnorm):
    """larch's pre_edge with every setting passed explicitly."""
    from larch import Group
    from larch.xafs import pre_edge

    group = Group()
    pre_edge(
        energy, mu, group=group, e0=e0, step=None, nnorm=nnorm, nvict=0, npre=1,
        pre1=pre1, pre2=pre2, norm1=norm1, norm2=norm2, make_flat=True, iscalc=False,
    )
    return group


# ---------------------------------------------------------------------------
# normalize_edge on cut real files
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", FE_FILES)
def test_cut_scan_normalizes_and_reports_clamping(shared, name):
    energy, mu = xanes_only(shared, name)
    res = normalize_edge(energy, mu)  # the defaults: [e0-150, e0-30], [e0+100, end]
    p, e0 = res.params, float(res.e0)
    # the default window holds at most one point of the cut scan
    assert np.sum((energy >= e0 - 150) & (energy <= e0 - 30)) < 3
    assert p["clamped"] == ["pre1", "pre2"]
    assert p["pre1_used"] == pytest.approx(energy[0] - e0)
    assert p["pre2_used"] == pytest.approx(-PRE_EDGE_MIN_GAP)
    assert p["pre_points"] == int(np.sum(energy <= e0 - PRE_EDGE_MIN_GAP)) >= 3
    assert p["norm1_used"] == 100.0 and p["norm2_used"] == pytest.approx(energy[-1] - e0)
    assert p["post_points"] == int(np.sum(energy >= e0 + 100.0))
    assert [w.split(":")[0] for w in p["clamp_warnings"]] == [
        "pre-edge window starts before the data",
        "pre-edge window held fewer than 3 points",
    ]
    assert float(res.edge_step) > 0 and np.all(np.isfinite(res.norm))


@pytest.mark.parametrize("nnorm", [1, 2, 3])
@pytest.mark.parametrize("name", FE_FILES)
def test_cut_scan_agrees_with_larch(shared, name, nnorm):
    """Same e0, the clamped windows passed to larch as they are: RMS <= 0.005.

    Measured RMS over [e0-20, e0+200] eV: fe2o3_rt 0.0037 / 0.00003 / 0.0006,
    feo_rt1 0.0009 / 0.0007 / 0.0013 (nnorm 1 / 2 / 3). The differences are
    larch's conventions (half-open index windows, so its post-edge window
    never holds the last point, and the edge step taken at the grid point
    nearest e0), see the next test.
    """
    pytest.importorskip("larch")
    energy, mu = xanes_only(shared, name)
    ours = normalize_edge(energy, mu, nnorm=nnorm)
    p, e0 = ours.params, float(ours.e0)
    ref = larch_pre_edge(energy, mu, e0, p["pre1_used"], p["pre2_used"], p["norm1_used"], p["norm2_used"], nnorm)
    sel = (energy >= e0 - 20.0) & (energy <= e0 + 200.0)
    assert sel.sum() > 100
    rms = np.sqrt(np.mean((ours.norm - ref.norm)[sel] ** 2))
    assert rms <= 0.005


@pytest.mark.parametrize("nnorm", [1, 2, 3])
@pytest.mark.parametrize("name", FE_FILES)
def test_cut_scan_same_points_same_numbers_as_larch(shared, name, nnorm):
    """With exactly larch's points and an e0 on the grid the curves agree to rounding (<= 1e-12)."""
    pytest.importorskip("larch")
    energy, mu = xanes_only(shared, name)
    e0 = float(energy[np.argmin(np.abs(energy - find_e0(energy, mu)))])
    p = normalize_edge(energy, mu, e0=e0, nnorm=nnorm).params
    # larch fits energy[p1:p2], p2 excluded, so it cannot use the last point
    ours = normalize_edge(energy, mu, e0=e0, nnorm=nnorm, norm2=0.5 * (energy[-2] + energy[-1]) - e0)
    last_pre = np.flatnonzero(energy <= e0 + p["pre2_used"])[-1]
    first_post = np.flatnonzero(energy >= e0 + p["norm1_used"])[0]
    ref = larch_pre_edge(
        energy, mu, e0,
        pre1=energy[0] - e0, pre2=energy[last_pre + 1] - e0,  # p2 = index nearest, excluded
        norm1=0.5 * (energy[first_post] + energy[first_post + 1]) - e0,  # p1 = last index at or below
        norm2=energy[-1] - e0, nnorm=nnorm,
    )
    np.testing.assert_allclose(ours.pre_edge, ref.pre_edge, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.post_edge, ref.post_edge, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.norm, ref.norm, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", FE_FILES)
def test_two_pre_edge_points_refused(shared, name):
    energy, mu = load(shared, name)
    e0_full = find_e0(energy, mu)
    below = energy[energy <= e0_full - PRE_EDGE_MIN_GAP]
    energy, mu = cut_below(energy, mu, below[-2])  # 2 points at or below e0-15 eV
    e0 = find_e0(energy, mu)
    assert np.sum(energy <= e0 - PRE_EDGE_MIN_GAP) == 2  # the edge did not move
    with pytest.raises(AnalysisInputError) as exc:
        normalize_edge(energy, mu)
    msg = str(exc.value)
    assert msg.startswith("pre-edge window [e0")
    assert "contains 2 point(s), fewer than 3" in msg
    assert f"e0-{PRE_EDGE_MIN_GAP:g} eV" in msg and "set pre2 closer to e0" in msg
    # what the message suggests works
    assert normalize_edge(energy, mu, pre2=-10.0).params["pre_points"] >= 3


def test_stack_clamps_per_pixel(shared):
    """normalize_stack applies the same clamping per pixel (each pixel's own e0)."""
    energy, mu = xanes_only(shared, "fe2o3_rt")
    shifted = np.interp(energy - 2.0, energy, mu)  # its edge 2 eV higher
    cols = np.stack([mu, 2.0 * mu + 0.1, shifted], axis=1)
    out = normalize_stack(energy, cols)
    one = [normalize_edge(energy, cols[:, j]) for j in range(cols.shape[1])]
    np.testing.assert_allclose(out["norm"].compute(), np.stack([r.norm for r in one], axis=1), rtol=0, atol=1e-12)
    # the shifted pixel starts 32 eV below its edge: [first, e0-30] holds enough points
    assert [r.params["clamped"] for r in one] == [["pre1", "pre2"], ["pre1", "pre2"], ["pre1"]]
    both = normalize_edge(energy, cols).params  # columns: per-column values, clamped in any column
    assert both["clamped"] == ["pre1", "pre2"] and "in 2 of 3 spectra" in both["clamp_warnings"][1]
    np.testing.assert_allclose(both["pre2_used"], [r.params["pre2_used"] for r in one], rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------
# through the normalize step: flags
# ---------------------------------------------------------------------------


def write_cut_xdi(src, dst, lo=-np.inf, hi=np.inf):
    """Copy an XDI file keeping only the data rows with lo <= energy <= hi (first column)."""
    lines = src.read_text().splitlines(keepends=True)
    kept = [ln for ln in lines if ln.startswith("#") or not ln.strip() or lo <= float(ln.split()[0]) <= hi]
    dst.write_text("".join(kept))
    return dst


def run_normalize(tmp_path, path):
    raw = ingest("cut", "xanes", "xdi", [str(path)], tmp_path / "raw.zarr")
    out = tmp_path / "norm.zarr"
    normalize(raw, out, analysis_defaults("xanes"))
    return open_store(out), read_provenance(out)


@pytest.mark.parametrize("name", FE_FILES)
def test_step_flags_a_cut_scan(tmp_path, shared, name):
    energy, mu = load(shared, name)
    src = shared / "xdi" / f"{name}.xdi"
    path = write_cut_xdi(src, tmp_path / f"{name}_xanes.xdi", lo=find_e0(energy, mu) - CUT_EV)
    g, prov = run_normalize(tmp_path, path)
    flags = list(g.attrs["flags"])
    assert f"pre_edge_extended(pre2 -30 -> -{PRE_EDGE_MIN_GAP:.1f} eV)" in flags
    assert not any(f.startswith(("short_pre_edge", "short_post_edge")) for f in flags)
    # res.params, with the windows used, are recorded in provenance
    used = prov["parameters"]["normalize"]
    assert used["clamped"] == ["pre1", "pre2"] and used["pre2_used"] == pytest.approx(-PRE_EDGE_MIN_GAP)


def test_step_flags_short_windows(tmp_path, shared):
    """A scan keeping 6 points at or below e0-15 eV and 6 at or above e0+100 eV: both windows short."""
    energy, mu = load(shared, "fe2o3_rt")
    e0 = find_e0(energy, mu)
    lo = energy[energy <= e0 - PRE_EDGE_MIN_GAP][-6]
    hi = energy[energy >= e0 + 100.0][5]
    src = shared / "xdi" / "fe2o3_rt.xdi"
    path = write_cut_xdi(src, tmp_path / "short.xdi", lo=lo, hi=hi)
    g, _ = run_normalize(tmp_path, path)
    e_cut = g["energy"][...]
    e0_cut = float(g.attrs["e0"])
    npre = int(np.sum(e_cut <= e0_cut - PRE_EDGE_MIN_GAP))
    npost = int(np.sum(e_cut >= e0_cut + 100.0))
    assert 3 <= npre < 10 and 3 <= npost < 10
    flags = list(g.attrs["flags"])
    assert f"short_pre_edge({npre} points)" in flags
    assert f"short_post_edge({npost} points)" in flags


def test_short_pre_edge_counts_the_window_used(shared):
    """spectrum_flags counts the points actually fitted, not the configured window."""
    energy, mu = xanes_only(shared, "feo_rt1")
    res = normalize_edge(energy, mu)
    flags = spectrum_flags(energy, mu, res, "Fe", "K", 0.5)
    e0 = float(res.e0)
    assert np.sum((energy >= e0 - 150) & (energy <= e0 - 30)) < 3  # the configured window
    assert res.params["pre_points"] >= 10
    assert not any(f.startswith("short_pre_edge") for f in flags)
