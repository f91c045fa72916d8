"""Proper prior distributions for the spectral models.

Every prior is a normalized distribution; an improper one (e.g. a uniform
without bounds) is refused, since it makes the free energy meaningless.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from xafsflow.errors import InputError

# Codes shared with the numba kernel.
FIXED, UNIFORM, LOGUNIFORM, NORMAL, GAMMA = 0, 1, 2, 3, 4
CODES = {"fixed": FIXED, "uniform": UNIFORM, "loguniform": LOGUNIFORM, "normal": NORMAL, "gamma": GAMMA}
# Parameters the sampler moves on a log scale (positive support); the Metropolis
# ratio then carries the Jacobian theta'/theta.
LOG_MOVES = {LOGUNIFORM, GAMMA}


class ImproperPriorError(InputError):
    """A prior that is not a proper (normalizable) distribution."""


@dataclass(frozen=True)
class Prior:
    """One parameter's prior.

    ``dist`` and its two numbers: ``uniform`` (lo, hi), ``loguniform`` (lo, hi),
    ``normal`` (mean, sd), ``gamma`` (shape, rate), ``fixed`` (value, unused).
    """

    dist: str
    a: float
    b: float = 0.0

    @property
    def code(self) -> int:
        return CODES[self.dist]

    @property
    def log_moves(self) -> bool:
        return self.code in LOG_MOVES

    def check(self, name: str) -> "Prior":
        """Raise :class:`ImproperPriorError` unless this is a proper distribution."""
        a, b = self.a, self.b
        if self.dist not in CODES:
            raise ImproperPriorError(f"prior of {name}: unknown distribution {self.dist!r} (use {', '.join(CODES)})")
        if not (math.isfinite(a) and math.isfinite(b)):
            raise ImproperPriorError(f"prior of {name}: {self.dist} needs finite numbers, got ({a}, {b}); "
                                     "an unbounded prior is improper and makes the free energy meaningless")
        if self.dist == "uniform" and not a < b:
            raise ImproperPriorError(f"prior of {name}: uniform needs lo < hi, got ({a}, {b})")
        if self.dist == "loguniform" and not 0 < a < b:
            raise ImproperPriorError(f"prior of {name}: loguniform needs 0 < lo < hi, got ({a}, {b})")
        if self.dist == "normal" and not b > 0:
            raise ImproperPriorError(f"prior of {name}: normal needs sd > 0, got {b}")
        if self.dist == "gamma" and not (a > 0 and b > 0):
            raise ImproperPriorError(f"prior of {name}: gamma needs shape > 0 and rate > 0, got ({a}, {b})")
        return self

    def logpdf(self, x):
        """Log density (natural parameter), -inf outside the support."""
        x = np.asarray(x, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.dist == "fixed":
                return np.where(x == self.a, 0.0, -np.inf)
            if self.dist == "uniform":
                return np.where((x >= self.a) & (x <= self.b), -math.log(self.b - self.a), -np.inf)
            if self.dist == "loguniform":
                inside = (x >= self.a) & (x <= self.b)
                return np.where(inside, -np.log(x) - math.log(math.log(self.b / self.a)), -np.inf)
            if self.dist == "normal":
                z = (x - self.a) / self.b
                return -0.5 * z * z - math.log(self.b * math.sqrt(2 * math.pi))
            k, r = self.a, self.b
            return np.where(x > 0, k * math.log(r) - math.lgamma(k) + (k - 1) * np.log(x) - r * x, -np.inf)

    def sample(self, rng: np.random.Generator, size) -> np.ndarray:
        if self.dist == "fixed":
            return np.full(size, self.a)
        if self.dist == "uniform":
            return rng.uniform(self.a, self.b, size)
        if self.dist == "loguniform":
            return np.exp(rng.uniform(math.log(self.a), math.log(self.b), size))
        if self.dist == "normal":
            return rng.normal(self.a, self.b, size)
        return rng.gamma(self.a, 1.0 / self.b, size)


def prior_from_config(spec, name: str) -> Prior:
    """Build a prior from config: ``{dist: gamma, shape: 5, rate: 5}``, ``{dist: uniform, lo: 0, hi: 1}``,
    ``{dist: normal, mean: 1.5, sd: 0.45}``, ``{dist: loguniform, lo: .., hi: ..}`` or ``{dist: fixed, value: ..}``."""
    if not isinstance(spec, dict) or "dist" not in spec:
        raise ImproperPriorError(f"prior of {name}: expected a mapping with 'dist', got {spec!r}")
    d = spec["dist"]
    keys = {"uniform": ("lo", "hi"), "loguniform": ("lo", "hi"), "normal": ("mean", "sd"),
            "gamma": ("shape", "rate"), "fixed": ("value",)}
    if d not in keys:
        raise ImproperPriorError(f"prior of {name}: unknown distribution {d!r} (use {', '.join(keys)})")
    missing = [k for k in keys[d] if spec.get(k) is None]
    if missing:
        raise ImproperPriorError(f"prior of {name}: {d} needs {', '.join(missing)} "
                                 "(an unbounded prior is improper and makes the free energy meaningless)")
    vals = [float(spec[k]) for k in keys[d]] + [0.0]
    return Prior(d, vals[0], vals[1]).check(name)
