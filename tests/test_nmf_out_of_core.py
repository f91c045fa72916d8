"""A stack several times a Dask worker's memory limit factorizes without the worker being killed."""

from __future__ import annotations

import numpy as np
import pytest

N_E, CHUNK = 64, 32768
N_PIX = 96 * CHUNK  # 3.1 M pixels x 64 energies: 805 MB as float32, 1.6 GB as float64
ENERGY = np.linspace(0.0, 1.0, N_E)
H_TRUE = np.stack([1.0 / (1.0 + np.exp(-(ENERGY - c) / 0.03)) + 1.5 * np.exp(-0.5 * ((ENERGY - c - 0.05) / 0.03) ** 2)
                   for c in (0.35, 0.55)])


def _pixels(block_info=None):
    """One chunk of X (pixels, energies), made from the chunk's location: X never exists whole."""
    (p0, p1), _ = block_info[None]["array-location"]
    i = np.arange(p0, p1)
    f = 0.5 + 0.5 * np.sin(i * 0.001)  # known fraction of component 0, pure pixels at the extremes
    w = np.stack([f, 1.0 - f], axis=1)
    return (w @ H_TRUE).astype(np.float32)


@pytest.mark.slow  # minutes on the shared 2-core machine: `make test-slow`
def test_stack_larger_than_worker_memory_factorizes():
    import dask.array as da

    from xafsflow.distributed import client
    from xafsflow.imaging.nmf import nmf

    X = da.map_blocks(_pixels, chunks=((CHUNK,) * (N_PIX // CHUNK), (N_E,)), dtype=np.float32)
    limit_mb = 320  # a worker process holds ~150 MB before any data; it pauses at 80 %
    assert X.nbytes > 2.5 * limit_mb * 1e6  # float32 stack 2.5x the worker's limit (5x as float64)
    with client(threads=1, mem_mb=limit_mb) as c:
        before = c.run(lambda: __import__("os").getpid())
        out = nmf(X, 2, energy=ENERGY, max_iter=2, tol=0)
        W = out.W[:: 4096].compute()
        after = c.run(lambda: __import__("os").getpid())
        info = c.scheduler_info()
    assert before == after  # the same worker process throughout: never killed and restarted
    assert all(w["memory_limit"] == limit_mb * 10 ** 6 for w in info["workers"].values())
    assert np.all(np.diff(out.errors) <= 1e-12)
    # noiseless data with pure pixels: the factorization is exact and recovers the truth
    assert out.errors[-1] < 1e-3
    i = np.arange(0, N_PIX, 4096)
    f = 0.5 + 0.5 * np.sin(i * 0.001)
    assert np.corrcoef(W[:, 0], f)[0, 1] > 0.999
