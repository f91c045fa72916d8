"""PCA of standardized texture statistics and a linear regression of alpha on the leading PCs.

As in Mototake, Shouno et al. (2021): the statistics of an ensemble of
simulated images are standardized (z-scores over the ensemble), projected on
their principal components, and alpha is regressed linearly on PC1 (or on the
first few PCs), trained on a random 20 % of the runs and scored (R^2) on the
other 80 %. Predictions carry an ordinary-least-squares prediction interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class DomainModel:
    """Standardization, PCA and regression fitted on one sweep rate's ensemble.

    Attributes
    ----------
    mean, scale : ndarray (n_stats,)
        Standardization of the statistics (scale 1 where a statistic is constant).
    components : ndarray (n_components, n_stats)
        Principal axes (rows), sign fixed so PC1 increases with alpha on the training runs.
    explained : ndarray (n_components,)
        Fraction of the standardized variance each component explains.
    n_pcs : int
        PCs used by the regression (1: alpha ~ PC1).
    coef : ndarray (n_pcs + 1,)
        Intercept, then one slope per PC.
    xtx_inv : ndarray (n_pcs + 1, n_pcs + 1)
        ``(X^T X)^-1`` of the training design (for prediction intervals).
    resid_sd : float
        Residual standard deviation on the training runs (``n - p`` degrees of freedom).
    dof : int
        Residual degrees of freedom.
    r2_test, r2_train : float
        Coefficient of determination on the test and the training runs.
    train, test : ndarray of int
        Run indices of each split (into the arrays the model was fitted on).
    """

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    explained: np.ndarray
    n_pcs: int
    coef: np.ndarray
    xtx_inv: np.ndarray
    resid_sd: float
    dof: int
    r2_test: float = float("nan")
    r2_train: float = float("nan")
    train: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    test: np.ndarray = field(default_factory=lambda: np.zeros(0, int))

    def scores(self, stats: np.ndarray) -> np.ndarray:
        """PC scores ``(n, n_components)`` of statistics ``(n, n_stats)`` (or one vector)."""
        z = (np.asarray(stats, dtype=np.float64) - self.mean) / self.scale
        return z @ self.components.T

    def predict(self, stats: np.ndarray, interval_level: float = 0.95) -> dict:
        """alpha with its ``interval_level`` prediction interval for statistics ``(n, n_stats)``.

        Returns ``{"alpha", "low", "high", "scores"}`` (arrays of length n).
        """
        from scipy import stats as sps

        pcs = np.atleast_2d(self.scores(stats))
        x = np.column_stack([np.ones(len(pcs)), pcs[:, : self.n_pcs]])
        pred = x @ self.coef
        lever = np.einsum("ij,jk,ik->i", x, self.xtx_inv, x)
        half = sps.t.ppf(0.5 + interval_level / 2, self.dof) * self.resid_sd * np.sqrt(1.0 + lever)
        return {"alpha": pred, "low": pred - half, "high": pred + half, "scores": pcs}


def split(n: int, train_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random (train, test) run indices, ``round(train_fraction n)`` (at least 3) for training."""
    n_train = int(min(n - 1, max(3, round(train_fraction * n))))
    perm = rng.permutation(n)
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])


def r2_score(y: np.ndarray, pred: np.ndarray) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot``."""
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    return float(1.0 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))


def fit(stats: np.ndarray, alpha: np.ndarray, train: np.ndarray, test: np.ndarray, n_pcs: int = 1,
        n_components: int = 5) -> DomainModel:
    """Standardize, PCA and regress alpha on the first ``n_pcs`` PCs.

    Standardization and PCA use every run given (they never see alpha); the
    regression uses the ``train`` runs only and is scored on ``test``.

    Parameters
    ----------
    stats : ndarray (n, n_stats)
        Statistics of the simulated images.
    alpha : ndarray (n,)
        Their anisotropy parameter.
    train, test : ndarray of int
        Indices of the two splits.
    n_pcs : int
        PCs in the regression.
    n_components : int
        PCs kept in the model (scores reported).
    """
    stats = np.asarray(stats, dtype=np.float64)
    alpha = np.asarray(alpha, dtype=np.float64)
    mean = stats.mean(axis=0)
    scale = stats.std(axis=0)
    scale = np.where(scale > 1e-12 * (np.abs(mean) + 1e-300), scale, 1.0)
    z = (stats - mean) / scale
    _, sv, vt = np.linalg.svd(z, full_matrices=False)
    n_components = int(min(n_components, vt.shape[0]))
    comps = vt[:n_components].copy()
    explained = (sv**2 / np.sum(sv**2))[:n_components]
    pcs = z @ comps.T
    for j in range(n_components):  # sign: each PC increases with alpha over the training runs
        if np.corrcoef(pcs[train, j], alpha[train])[0, 1] < 0:
            comps[j] *= -1
            pcs[:, j] *= -1
    x = np.column_stack([np.ones(len(train)), pcs[train, :n_pcs]])
    coef, *_ = np.linalg.lstsq(x, alpha[train], rcond=None)
    dof = len(train) - x.shape[1]
    if dof < 1:
        raise ValueError(f"{len(train)} training runs cannot fit {n_pcs} PC(s) and an intercept")
    resid = alpha[train] - x @ coef
    model = DomainModel(mean=mean, scale=scale, components=comps, explained=explained, n_pcs=n_pcs, coef=coef,
                        xtx_inv=np.linalg.inv(x.T @ x), resid_sd=float(np.sqrt(resid @ resid / dof)), dof=dof,
                        train=np.asarray(train), test=np.asarray(test))
    model.r2_train = r2_score(alpha[train], x @ coef)
    if len(test):
        model.r2_test = r2_score(alpha[test], model.predict(stats[test])["alpha"])
    return model


def fit_per_sweep_rate(stats: np.ndarray, alpha: np.ndarray, v: np.ndarray, train_fraction: float = 0.2,
                       n_pcs: int = 1, n_components: int = 5, rng: np.random.Generator | None = None
                       ) -> dict[float, DomainModel]:
    """One :class:`DomainModel` per sweep rate (as the paper scores each rate on its own ensemble).

    Each rate's runs are split at random (``train_fraction`` for training)
    with ``rng``; indices in the models refer to that rate's runs in order.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    models = {}
    for rate in np.unique(v)[::-1]:  # fastest first, a fixed order for the random splits
        sel = np.flatnonzero(v == rate)
        train, test = split(sel.size, train_fraction, rng)
        models[float(rate)] = fit(stats[sel], alpha[sel], train, test, n_pcs=n_pcs, n_components=n_components)
    return models
