"""MRF segmentation of the real ALS STXM stack (Fe L2,3), library level.

The workflow has no STXM ingest yet, so this test reads the aXis2000 files itself
(header energies, one .xim image per energy, I0 spectrum, the authors' mask),
converts to optical density and normalizes by the pre-edge (700-705 eV) and
post-edge (725-730 eV) means; then features, the MRF over a C range, the grain
table, and the chunked fit. No ground truth exists: the test asserts the run
completes, classes separate the two Fe L3 peak positions the README of the
data names (near 707.8 and 709.5 eV), the table lists every grain at or above
the minimum area, and labels are identical across chunkings.
"""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from scipy import ndimage

from conftest import REPO
from xafsflow.imaging import features as ft
from xafsflow.imaging import mrf
from xafsflow.products import segment as seg

STXM = REPO.parent / "shared" / "data" / "stxm" / "als_fe_l23_71214098"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not STXM.is_dir(), reason="shared STXM data not present")]


def read_stxm():
    hdr = (STXM / "71214098.hdr").read_text()
    pts = re.search(r"StackAxis\s*=\s*\{[^}]*?Points\s*=\s*\(([^)]*)\)", hdr, re.S).group(1).split(",")
    energy = np.array([float(v) for v in pts[1: 1 + int(float(pts[0]))]])
    frames = np.stack([np.loadtxt(STXM / f"71214098_a{i:03d}.xim") for i in range(energy.size)])
    i0 = np.loadtxt(STXM / "i0.xsp")
    od = -np.log(np.clip(frames, 1.0, None) / np.interp(energy, i0[:, 0], i0[:, 1])[:, None, None])
    keep = np.array([[ch == "O" for ch in line] for line in (STXM / "remove_thick_part.msk").read_text().splitlines()])
    pre, post = od[energy < 705].mean(axis=0), od[energy > 725].mean(axis=0)
    step = post - pre
    norm = (od - pre) / np.where(step > 0, step, np.nan)
    return energy, norm, keep & (step > 0.05)


def test_stxm_stack_segments_into_fe_l3_classes_identically_across_chunkings(tmp_path):
    import dask

    energy, norm, use = read_stxm()
    assert energy.size == 123 and norm.shape == (123, 150, 150)
    maps = ft.pixel_features(energy, norm, 708.0, window=(-4.0, 4.0), smooth_sigma_ev=0.3, mask=use)
    sel = mrf.select_classes(maps.values, maps.mask, classes_min=2, classes_max=5, seed=0)
    best = sel.best
    assert all(np.isfinite(sel.gmm_bic)) and len(sel.bic) == 4
    # the L3 peak (white-line) energy of the classes spans both Fe2+ (~707.8 eV) and Fe3+ (~709.5 eV)
    wl = best.means[:, 1] * maps.sd[1] + maps.mean[1]
    assert wl.min() < 708.3 and wl.max() > 709.2
    grain_map, table = seg.grains(best.labels, 4)
    listed = [t for t in table if t[2] >= 4]
    seg.write_tsv(tmp_path / "stxm.tsv", listed, grain_map, maps, best.probabilities, 0.08)
    with open(tmp_path / "stxm.tsv") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    # every connected region of one class with >= 4 pixels, counted independently
    expected = sum(int(np.sum(np.bincount(ndimage.label(best.labels == c)[0].ravel())[1:] >= 4))
                   for c in range(best.n_classes))
    assert len(rows) == expected > 0
    with dask.config.set(scheduler="synchronous"):
        chunked = mrf.fit_mrf(maps.values, best.n_classes, maps.mask, seed=0, chunks=(50, 75))
    assert np.array_equal(chunked.labels, best.labels)
    assert np.max(np.abs(chunked.probabilities - best.probabilities)) < 1e-9
