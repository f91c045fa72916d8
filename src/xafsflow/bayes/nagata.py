"""The Nagata, Sugita & Okada (2012) benchmark: three Gaussians on x in [0, 3], step 0.01.

Shared by the tests and the benchmarks, including the same problem written for
dynesty (the peer for log evidences).
"""

from __future__ import annotations

import math

import numpy as np

A = (0.587, 1.522, 1.183)
MU = (1.210, 1.455, 1.703)
B = (95.689, 146.837, 164.469)
X = np.round(np.arange(301) * 0.01, 10)


def truth_vector() -> np.ndarray:
    """(a_1, mu_1, b_1, a_2, ...) in the sampler's parameter order."""
    return np.array([v for k in range(3) for v in (A[k], MU[k], B[k])])


def data(seed: int, sigma: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(x, y): the true curve plus Gaussian noise of sd ``sigma`` from ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    f = sum(a * np.exp(-b * (X - m) ** 2 / 2) for a, m, b in zip(A, MU, B))
    return X, f + rng.normal(0, sigma, X.size)


def dynesty_problem(x: np.ndarray, y: np.ndarray, sigma: float, K: int = 3):
    """(loglike, prior_transform) of the K-component ``peaks`` model with the benchmark's priors.

    The likelihood is normalized like ours, (b/2pi)^(N/2) exp(-b SSE/2); the prior
    transform sorts the components by centre, which pushes the iid prior forward
    to the ordered prior K! prod p used by the sampler.
    """
    from scipy import stats

    b = 1 / sigma**2
    n = x.size
    ga, nm, gb = stats.gamma(5, scale=1 / 5), stats.norm(1.5, math.sqrt(0.2)), stats.gamma(5, scale=1 / 0.04)
    const = 0.5 * n * math.log(b / (2 * math.pi))

    def loglike(theta):
        th = theta.reshape(K, 3)
        f = np.zeros_like(x)
        for a, m, bb in th:
            f += a * np.exp(-bb * (x - m) ** 2 / 2)
        return -0.5 * b * np.sum((y - f) ** 2) + const

    def prior_transform(u):
        th = np.empty(3 * K)
        th[0::3], th[1::3], th[2::3] = ga.ppf(u[0::3]), nm.ppf(u[1::3]), gb.ppf(u[2::3])
        return th.reshape(K, 3)[np.argsort(th[1::3])].ravel()

    return loglike, prior_transform
