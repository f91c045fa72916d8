"""Settings of a replica-exchange chain (light: no numba), checked before any job runs."""

from __future__ import annotations

from dataclasses import dataclass

# free background parameters of each model (the rest is 3 per component)
BACKGROUND_PARAMS = {"peaks": 0, "xanes": 7, "preedge": 5, "xmcd": 0}
# A spectrum must have at least this many points per free parameter of the largest model
# (N - P >= P: as many residual degrees of freedom as parameters, for the noise estimate).
MIN_POINTS_PER_PARAMETER = 2


@dataclass
class ChainSettings:
    sweeps: int = 4000  # production sweeps
    burn_in: int = 4000
    thin: int = 10
    block: int = 50  # sweeps per kernel call (a multiple of thin)
    adapt_every: int = 50
    target_acceptance: float = 0.4
    refresh: int = 100
    checkpoint_every: int = 500  # sweeps (a multiple of block)
    joint_window: int = 500  # burn-in sweeps whose draws estimate the joint-move covariance
    joint_min: int = 200  # joint moves start once this many burn-in draws are there
    joint_target: float = 0.25
    # conditional-linear moves (remc): the linear parameters drawn from their Gaussian given the rest
    linear_moves: bool = True

    def check(self):
        if self.block % self.thin:
            raise ValueError("block must be a multiple of thin")
        if self.checkpoint_every % self.block or self.burn_in % self.block or self.sweeps % self.block:
            raise ValueError("burn_in, sweeps and checkpoint_every must be multiples of block")
        return self
