"""Per-pixel normalization of stacks: the matrix-form E0 search and the block path against the NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

from xafsflow.imaging.pixels import _normalize_block_tolerant, find_e0_block
from xafsflow.simulate import forward as fw
from xafsflow.xas.normalize import find_e0, normalize_edge


def _block(n=300, seed=1, irregular=True):
    r = np.random.default_rng(seed)
    if irregular:  # XANES-like: coarse pre-edge, fine edge, coarser post-edge
        e = np.r_[np.linspace(7030.0, 7100.0, 30), np.linspace(7100.5, 7140.0, 60), np.linspace(7141.0, 7290.0, 40)]
    else:
        e = np.linspace(7030.0, 7290.0, 100)
    mu = np.stack([fw.xanes_normalized(e, 7105.0 + 10 * r.random(), 2.0, 3.0, 2.0, 4.0, 0.5, [])
                   for _ in range(n)], axis=1)
    return e, 0.3 + mu * r.uniform(0.5, 1.5, n) + r.normal(0.0, 0.02, mu.shape)


@pytest.mark.parametrize("irregular", [True, False])
@pytest.mark.parametrize("smooth_ev", [0.0, 0.5, 2.0])
def test_find_e0_block_equals_find_e0(irregular, smooth_ev):
    e, mu = _block(irregular=irregular)
    np.testing.assert_allclose(find_e0_block(e, mu, smooth_ev), find_e0(e, mu, smooth_ev), rtol=0, atol=1e-9)


def test_find_e0_block_falls_back_on_very_fine_grids():
    e = np.linspace(7000.0, 7400.0, 2000)
    e[1] = e[0] + 1e-3  # finest step 1 meV: the uniform grid hits its 16384-point bound
    mu = np.stack([fw.xanes_normalized(e, 7150.0 + j, 2.0, 3.0, 2.0, 4.0, 0.5, []) for j in range(3)], axis=1)
    np.testing.assert_array_equal(find_e0_block(e, mu), find_e0(e, mu))


@pytest.mark.parametrize("nnorm", [0, 1, 2])
def test_block_normalization_equals_normalize_edge(nnorm):
    """The stack path (E0 in matrix form, then the batched fits) gives the NumPy normalize_edge's numbers."""
    e, mu = _block(n=200, seed=4)
    params = {"pre1": -60.0, "pre2": -20.0, "norm1": 40.0, "nnorm": nnorm}
    packed = _normalize_block_tolerant(mu, e, params)
    ref = normalize_edge(e, mu, **params)
    np.testing.assert_allclose(packed[0], ref.e0, rtol=0, atol=1e-9)
    np.testing.assert_allclose(packed[1], ref.edge_step, rtol=1e-9)
    np.testing.assert_allclose(packed[2:2 + e.size], ref.norm, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(packed[2 + e.size:], ref.flat, rtol=1e-9, atol=1e-9)
