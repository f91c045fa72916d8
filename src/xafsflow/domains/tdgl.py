"""Time-dependent Ginzburg-Landau (TDGL) simulation of magnetic domain patterns.

The order parameter phi(r, t) (the perpendicular magnetization, +-1 in
saturated domains) of a thin film on an ``(n, n)`` periodic grid follows

    dphi/dt = alpha lambda(r) (phi - phi^3) + beta laplacian(phi) - gamma (G * phi) + h(t),
    h(t) = h0 - v t,

after Mototake, Shouno et al., JPSJ 90, 044705 (2021): ``alpha`` the
anisotropy (depth of the local double well), ``lambda(r) = 1 + N(0, 0.3^2)``
quenched disorder, ``beta`` the exchange stiffness, ``gamma`` the strength of
the long-range dipolar interaction ``G`` and ``h`` the applied field, swept
down from saturation at rate ``v`` until it reaches zero. Lengths are in grid
spacings (the simulation's length unit), times in the units of the equation.

The equation is the gradient flow ``dphi/dt = -dF/dphi`` of the free energy
(:func:`free_energy`)

    F = sum_r [alpha lambda (phi^4/4 - phi^2/2) + beta/2 |grad phi|^2 + gamma/2 phi (G * phi) - h phi].

Dipolar kernel
--------------
``G`` is the thickness-averaged demagnetizing field of a film of thickness
``d`` magnetized perpendicular to its plane, uniform through the thickness:
in Fourier space ``G(k) = (1 - exp(-k d)) / (k d)``, ``G(0) = 1``. It is
chosen because it is the exact magnetostatic interaction of such a film
(Kooy & Enz 1960; Yafet & Gyorgy 1988): at distances much larger than ``d``
it is the repulsive ``1/r^3`` dipolar interaction (``G ~ 1 - k d / 2``), at
``k = 0`` it is the uniform demagnetizing field that opposes saturation, and
unlike a bare ``1/r^3`` sum on the grid it needs no short-distance cutoff.
It decreases monotonically with ``k``, which is what makes stripes of a
finite period cheaper than a uniform state.

Time stepping
-------------
Semi-implicit Fourier-spectral (stabilized) scheme: the constant-coefficient
linear terms, ``A = -beta laplacian + gamma G`` and a stabilizing constant
``c``, are implicit in Fourier space; ``alpha lambda(r) (phi - phi^3)``, the
field and ``c phi`` are explicit::

    (1 + dt (beta k^2 + gamma G(k) + c)) phi_k^{n+1}
        = [phi^n + dt (alpha lambda (phi^n - (phi^n)^3) + h(t_n) + c phi^n)]_k .

With ``W(phi) = alpha lambda (phi^4/4 - phi^2/2)`` and ``L`` the largest
``W''`` over the values phi takes (``|phi| <= phi_max``),
``L = alpha max_r max(lambda (3 phi_max^2 - 1), -lambda)``, each step at
fixed ``h`` lowers ``F`` by at least ``(1/dt + c - L/2) |phi^{n+1} - phi^n|^2``
(Shen & Yang 2010), so the scheme is energy stable under

    dt <= 1 / (L/2 - c)        (any dt when c >= L/2);

:func:`stable_time_step` returns this bound. ``k^2`` is the spectral
(exact) Laplacian symbol.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# the quenched disorder lambda(r) = 1 + N(0, DISORDER_SD^2) of the paper
DISORDER_SD = 0.3
# upper truncation of lambda(r) (see disorder)
LAMBDA_MAX = 2.0


@dataclass(frozen=True)
class TDGLParams:
    """Parameters of one TDGL run (all but alpha shared by an ensemble).

    Attributes
    ----------
    alpha : float
        Anisotropy: depth of the local double well.
    beta : float
        Exchange stiffness (grid spacings^2 per time unit).
    gamma : float
        Strength of the long-range dipolar interaction.
    h0 : float
        Starting field (saturation); swept linearly to zero.
    v : float
        Sweep rate of the field (field per time unit).
    n : int
        Grid side (pixels); the grid is ``(n, n)``, periodic.
    thickness : float
        Film thickness ``d`` of the dipolar kernel, grid spacings.
    dt : float
        Time step (see :func:`stable_time_step` for its bound).
    stabilizer : float
        The stabilizing constant ``c`` of the semi-implicit scheme.
    phi_max : float
        Bound on ``|phi|`` assumed by the time-step bound (a run reports the
        largest ``|phi|`` it reached, so the assumption is checked).
    precision : str
        ``float64`` or ``float32`` arithmetic of the time stepping (float32
        FFTs are about 2.5x faster; ensembles use them, tests of the scheme float64).
    """

    def time_step_bound(self, alpha: float | None = None) -> float:
        """Energy-stable step bound for ``alpha`` (default ``self.alpha``) and any disorder (lambda <= 2)."""
        a = self.alpha if alpha is None else alpha
        return stable_time_step(a, np.array([LAMBDA_MAX]), self.stabilizer, self.phi_max)

    alpha: float
    beta: float = 0.5
    gamma: float = 2.0
    h0: float = 2.2
    v: float = 0.01
    n: int = 128
    thickness: float = 4.0
    dt: float = 0.25
    stabilizer: float = 4.0
    phi_max: float = 1.2
    precision: str = "float32"


def wavenumbers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(k^2, |k|)`` on the ``rfft2`` grid of an ``(n, n)`` image (radians per grid spacing)."""
    ky = 2.0 * np.pi * np.fft.fftfreq(n)
    kx = 2.0 * np.pi * np.fft.rfftfreq(n)
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    return k2, np.sqrt(k2)


def dipolar_kernel(n: int, thickness: float = 4.0) -> np.ndarray:
    """Thin-film dipolar kernel ``G(k) = (1 - exp(-k d)) / (k d)`` on the ``rfft2`` grid (``G(0) = 1``)."""
    _, k = wavenumbers(n)
    kd = k * thickness
    out = np.ones_like(kd)
    nz = kd > 0
    out[nz] = -np.expm1(-kd[nz]) / kd[nz]
    return out


def disorder(n: int, rng: np.random.Generator) -> np.ndarray:
    """Quenched disorder ``lambda(r) = 1 + N(0, 0.3^2)`` on an ``(n, n)`` grid, truncated to [0, 2].

    The truncation (at 1/0.3 = 3.3 sd, 0.09 % of the pixels) keeps the
    anisotropy's sign and bounds ``lambda`` by 2, which gives the time-step
    bound of :func:`stable_time_step` before any run.
    """
    return np.clip(1.0 + DISORDER_SD * rng.standard_normal((n, n)), 0.0, LAMBDA_MAX)


def stable_time_step(alpha: float, lam: np.ndarray, stabilizer: float, phi_max: float) -> float:
    """Largest energy-stable time step of the semi-implicit scheme (``inf`` when unconditional).

    Parameters
    ----------
    alpha : float
        Anisotropy.
    lam : ndarray
        Disorder ``lambda(r)``.
    stabilizer : float
        The constant ``c`` treated implicitly.
    phi_max : float
        Bound on ``|phi|`` over the run.

    Returns
    -------
    float
        ``1 / (L/2 - c)`` with ``L = alpha max_r max(lambda (3 phi_max^2 - 1), -lambda)``.
    """
    lam = np.asarray(lam)
    curv = alpha * float(np.max(np.maximum(lam * (3.0 * phi_max**2 - 1.0), -lam)))
    room = curv / 2.0 - stabilizer
    return np.inf if room <= 0 else 1.0 / room


def free_energy(phi: np.ndarray, alpha: float, lam: np.ndarray, beta: float, gamma: float, h: float,
                kernel: np.ndarray) -> float:
    """Free energy ``F`` (module docstring) of ``phi``, summed over the grid (float64).

    The gradient and dipolar terms are evaluated spectrally, as the scheme treats them.
    """
    n = phi.shape[-1]
    k2, _ = wavenumbers(n)
    ph = np.fft.rfft2(phi)
    # Parseval on the rfft grid: columns other than 0 and n/2 stand for two conjugate modes
    weight = np.full(ph.shape[-1], 2.0)
    weight[0] = 1.0
    if n % 2 == 0:
        weight[-1] = 1.0
    quad = float(np.sum(weight * (beta * k2 + gamma * kernel) * np.abs(ph) ** 2)) / phi.size
    local = float(np.sum(alpha * lam * (phi**4 / 4.0 - phi**2 / 2.0) - h * phi))
    return 0.5 * quad + local


def _operator(p: TDGLParams) -> np.ndarray:
    k2, _ = wavenumbers(p.n)
    return p.beta * k2 + p.gamma * dipolar_kernel(p.n, p.thickness) + p.stabilizer


def n_steps(p: TDGLParams) -> tuple[int, float]:
    """Steps of a sweep from ``h0`` to zero and the time step that ends exactly there."""
    t_end = p.h0 / p.v
    steps = max(1, int(np.ceil(t_end / p.dt - 1e-9)))
    return steps, t_end / steps


def run(p: TDGLParams, seed: np.random.SeedSequence | int, snapshots: int = 0,
        field_fixed: bool = False, steps: int | None = None) -> dict:
    """One TDGL run: a pure function of the parameters and the seed.

    Parameters
    ----------
    p : TDGLParams
        Parameters; the field goes from ``h0`` to 0 at rate ``v``.
    seed : SeedSequence or int
        Seeds the disorder ``lambda(r)`` and the small initial noise.
    snapshots : int
        Number of evenly spaced snapshots to return besides the final image.
    field_fixed : bool
        Hold ``h = h0`` (for energy checks) and run ``steps`` steps of ``p.dt``.
    steps : int, optional
        Steps when ``field_fixed``.

    Returns
    -------
    dict
        ``image`` (n, n) float64 final phi, ``lam`` the disorder, ``snapshots``
        (k, n, n), ``fields`` (k,), ``phi_max`` (largest |phi| seen), ``steps``, ``dt``.
    """
    return run_batch([p.alpha], p, [seed], snapshots=snapshots, field_fixed=field_fixed, steps=steps)[0]


def initial_state(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(disorder lambda, initial phi): saturated (+1) with 1e-3 noise."""
    lam = disorder(n, rng)
    phi = 1.0 + 1e-3 * rng.standard_normal((n, n))
    return lam, phi


def run_batch(alphas, p: TDGLParams, seeds, snapshots: int = 0, field_fixed: bool = False,
              steps: int | None = None) -> list[dict]:
    """Several runs sharing every parameter but ``alpha`` and the seed, stepped together.

    The batch is only a speed-up (one FFT call for all); run ``i`` equals
    :func:`run` with ``alpha = alphas[i]`` and ``seeds[i]`` to rounding.
    """
    from scipy import fft as sfft

    dtype = np.dtype(p.precision)
    alphas = np.asarray(alphas, dtype=np.float64)[:, None, None]
    lam = np.empty((alphas.shape[0], p.n, p.n))
    phi = np.empty_like(lam)
    for i, s in enumerate(seeds):
        lam[i], phi[i] = initial_state(p.n, np.random.default_rng(s))
    if field_fixed:
        nst, dt = int(steps), p.dt
    else:
        nst, dt = n_steps(p)
    inv_denom = (1.0 / (1.0 + dt * _operator(p))).astype(dtype)
    # explicit part phi + dt (alpha lam (phi - phi^3) + h + c phi) = phi (b + a (1 - phi^2)) + dt h
    a = (dt * alphas * lam).astype(dtype)
    b = dtype.type(1.0 + dt * p.stabilizer)
    phi = phi.astype(dtype)
    every = max(1, nst // snapshots) if snapshots else 0
    snaps, fields = [], []
    phi_max = np.max(np.abs(phi), axis=(1, 2))
    for i in range(nst):
        h = p.h0 if field_fixed else p.h0 - p.v * dt * i
        explicit = phi * (b + a * (1 - phi * phi))
        explicit += dtype.type(dt * h)
        spec = sfft.rfft2(explicit)
        spec *= inv_denom
        phi = sfft.irfft2(spec, s=(p.n, p.n))
        phi_max = np.maximum(phi_max, np.max(np.abs(phi), axis=(1, 2)))
        if every and (i + 1) % every == 0 and len(snaps) < snapshots:
            snaps.append(phi.astype(np.float64))
            fields.append(p.h0 if field_fixed else p.h0 - p.v * dt * (i + 1))
    phi = phi.astype(np.float64)
    out = []
    for j in range(alphas.shape[0]):
        out.append({"image": phi[j], "lam": lam[j], "phi_max": float(phi_max[j]), "steps": nst, "dt": dt,
                    "snapshots": np.array([s[j] for s in snaps]).reshape(-1, p.n, p.n),
                    "fields": np.array(fields)})
    return out


def run_explicit(p: TDGLParams, seed, dt: float, steps: int | None = None) -> np.ndarray:
    """Reference: forward Euler with every term explicit (spectral Laplacian and kernel).

    Only for tests (stable for small ``dt`` only). Same initial state and field
    as :func:`run`: swept from ``h0`` to zero at rate ``v``, or held at ``h0``
    for ``steps`` steps when ``steps`` is given.
    """
    lam, phi = initial_state(p.n, np.random.default_rng(seed))
    k2, _ = wavenumbers(p.n)
    lin = p.beta * k2 + p.gamma * dipolar_kernel(p.n, p.thickness)
    if steps is None:
        t_end = p.h0 / p.v
        steps = max(1, int(round(t_end / dt)))
        dt = t_end / steps
        fields = p.h0 - p.v * dt * np.arange(steps)
    else:
        fields = np.full(steps, p.h0)
    for h in fields:
        linear = np.fft.irfft2(-lin * np.fft.rfft2(phi), s=(p.n, p.n))
        phi = phi + dt * (p.alpha * lam * (phi - phi**3) + linear + h)
    return phi


# ---------------------------------------------------------------------------- ensembles
def ensemble_seeds(campaign_seed: int, n_runs: int, key: str = "domain-ensemble") -> list[np.random.SeedSequence]:
    """One SeedSequence per run index: ``SeedSequence([campaign_seed, blake2b(key, run)])``."""
    from xafsflow.seeds import seed_sequence

    return [seed_sequence(campaign_seed, key, i) for i in range(n_runs)]


def ensemble(alphas, sweep_rates, base: TDGLParams, campaign_seed: int, runs_per_task: int = 8):
    """A Dask array of TDGL images over ``alphas`` x ``sweep_rates``.

    Run ``i`` (alpha ``alphas[i % len(alphas)]``, sweep rate
    ``sweep_rates[i // len(alphas)]``) is seeded from its index alone
    (:func:`ensemble_seeds`), so the images do not depend on the chunking.

    Returns
    -------
    images : dask.array.Array
        ``(runs, n, n)`` float32, chunks of ``runs_per_task`` runs (never across sweep rates).
    params : dict
        ``alpha`` and ``v`` per run (NumPy arrays) and ``seed_entropy`` (list).
    """
    import dask
    import dask.array as da

    alphas = np.asarray(alphas, dtype=np.float64)
    na = alphas.size
    all_alpha = np.tile(alphas, len(sweep_rates))
    all_v = np.repeat(np.asarray(sweep_rates, dtype=np.float64), na)
    seeds = ensemble_seeds(campaign_seed, all_alpha.size)
    blocks = []
    for iv, v in enumerate(sweep_rates):
        p = TDGLParams(**{**base.__dict__, "v": float(v), "alpha": 0.0})
        for start in range(0, na, runs_per_task):
            idx = np.arange(iv * na + start, iv * na + min(na, start + runs_per_task))
            task = dask.delayed(_images)(all_alpha[idx], p, [seeds[i] for i in idx])
            blocks.append(da.from_delayed(task, shape=(idx.size, base.n, base.n), dtype=np.float32))
    images = da.concatenate(blocks, axis=0)
    return images, {"alpha": all_alpha, "v": all_v, "seed_entropy": [str(s.entropy) + ":" + str(s.spawn_key)
                                                                      for s in seeds]}


def _images(alphas, p, seeds) -> np.ndarray:
    return np.stack([r["image"] for r in run_batch(alphas, p, seeds)]).astype(np.float32)
