"""Per-pixel normalization of a stack, Zarr to Zarr, against bare I/O of the same stores and against xraylarch.

A synthetic 1000 x 1000 pixel x 100 energy float32 stack (7030-7210 eV, 5 eV steps below 7100 and above
7135 eV, 0.5 eV between; per pixel an arctan
edge at E0 uniform in 7108-7116 eV with a white line, edge step 0.5-1.5, sloped pre-edge, Gaussian noise sd
0.01) is written once to a Zarr store chunked as ingest chunks it (whole energy axis, 4 rows of 1000 pixels).
Each repeat then runs, each in a fresh spawned process (so peak RSS is that measurement's own):

- ``io``: bare I/O -- read the raw store and write the same four arrays the normalize step writes (two
  float32 cubes, two float64 planes, same chunks and compression) on Dask's threaded scheduler, 2 threads,
  set as the step sets it (``xafsflow.distributed.step_scheduler``);
- ``threads``: :func:`xafsflow.steps.normalize` with ``scheduler="threads"`` (the default), 2 threads;
  both start the clock after importing dask.array and the store module (the step's own imports, numba and
  its compiled kernels included, are timed);
- ``cluster`` (``--cluster``): the same with ``scheduler="cluster"`` (a local cluster of 2 worker processes,
  4000 MB split between them); the peak RSS given is the largest of the step's process and its workers.

Wall time of each, and the ratio step / io per repeat (median and range printed). Then xraylarch's
``pre_edge`` on 2000 random pixels (E0 found by larch, the same windows passed explicitly): ms per spectrum,
and agreement with the step's output on those pixels -- E0 against larch's (README tolerance 0.1 eV at the
default 0.5 eV smoothing) and, at larch's E0, the edge step (README tolerance 0.7 %).

    PYTHONPATH=src python benchmarks/bench_normalize.py [--repeats 3] [--cluster] [--side 1000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

N_E = 100
PARAMS = {"normalize": {"pre1": -70.0, "pre2": -20.0, "norm1": 40.0, "nnorm": 1}}
# a micro-XANES grid: 5 eV steps in the pre- and post-edge, 0.5 eV through the edge (14 + 71 + 15 points)
ENERGY = np.r_[np.arange(7030.0, 7096.0, 5.0), np.arange(7100.0, 7135.25, 0.5), np.arange(7140.0, 7211.0, 5.0)]
assert ENERGY.size == N_E


NOISE = 0.01  # sd of the Gaussian noise on mu


def _edge(u):
    """The edge shape at E - E0 = u eV: arctan step (half width 2 eV) and a white line 6 eV above."""
    return 0.5 + np.arctan(u / 2.0) / np.pi + 0.4 * np.exp(-0.5 * ((u - 6.0) / 4.0) ** 2)


def _steepest_offset() -> float:
    """Where the model's slope is largest, eV above its arctan centre (the true 'E0' of both definitions)."""
    u = np.linspace(-3.0, 3.0, 600001)
    return float(u[np.argmax(np.gradient(_edge(u), u))])


def _block(block_info=None, noise=NOISE, truth=False):
    """Synthetic spectra of one chunk, from the chunk's location (deterministic, never the whole stack);
    ``truth``: the chunk's arctan centres (rows, columns) instead."""
    (y0, y1), (x0, x1) = block_info[None]["array-location"][1:]
    r = np.random.default_rng([y0, x0])
    shape = (y1 - y0, x1 - x0)
    e0 = r.uniform(7108.0, 7116.0, shape)[None]
    if truth:
        return e0[0]
    step = r.uniform(0.5, 1.5, shape)[None]
    e = ENERGY[:, None, None]
    mu = 0.3 + 2e-4 * (e - 7030.0) + step * _edge(e - e0) + noise * r.normal(0.0, 1.0, (N_E,) + shape)
    return mu.astype(np.float32)


def make_stack(path: Path, side: int) -> None:
    import dask
    import dask.array as da

    from xafsflow.io import store as st
    from xafsflow.io.stacks import stack_chunks

    chunks = stack_chunks((N_E, side, side), 4096)
    lazy = da.map_blocks(_block, chunks=((N_E,), *[da.core.normalize_chunks(c, (s,))[0]
                                                  for c, s in zip(chunks[1:], (side, side))]), dtype=np.float32)
    with st.atomic_store(path) as g:
        st.put_array(g, "energy", ENERGY, ("energy",), attrs={"units": "eV"})
        target = st.create_array(g, "mu", lazy.shape, np.float32, ("energy", "y", "x"), chunks)
        with dask.config.set(scheduler="threads", num_workers=2):
            da.store(lazy, target, lock=False)
        st.set_attrs(g, scan_id="bench", kind="stack", format="tiff_stack", element="Fe", edge="K",
                     **{st.PROVENANCE_KEY: st.provenance("ingest")})


def _peak_rss_mb() -> tuple[float, float]:
    import resource

    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0)


def run_io(raw: str, out: str) -> tuple[float, float, float]:
    """Bare read + write of the normalize step's stores (no computation beyond a float32 copy)."""
    import dask.array as da

    from xafsflow.distributed import step_scheduler
    from xafsflow.io import store as st

    t0 = time.perf_counter()
    mu_z = st.open_store(raw)["mu"]
    ne, ny, nx = mu_z.shape
    chunks = mu_z.chunks
    mu = da.from_zarr(mu_z)
    with step_scheduler("threads", 2), st.atomic_store(out) as g:  # the step's own scheduler setting
        cube, plane = ("energy", "y", "x"), ("y", "x")
        targets = [st.create_array(g, "norm", (ne, ny, nx), np.float32, cube, chunks),
                   st.create_array(g, "flat", (ne, ny, nx), np.float32, cube, chunks),
                   st.create_array(g, "e0", (ny, nx), np.float64, plane, chunks[1:]),
                   st.create_array(g, "edge_step", (ny, nx), np.float64, plane, chunks[1:])]
        da.store([mu, mu, mu[0].astype(np.float64), mu[-1].astype(np.float64)], targets, lock=False)
    return (time.perf_counter() - t0, *_peak_rss_mb())


def run_step(raw: str, out: str, scheduler: str) -> tuple[float, float, float]:
    import dask  # noqa: F401 -- imported before the clock starts, as in run_io (about 1 s under load)
    import dask.array  # noqa: F401

    from xafsflow.io import store  # noqa: F401
    from xafsflow.steps import normalize

    t0 = time.perf_counter()
    normalize(raw, out, PARAMS, threads=2, mem_mb=4000, scheduler=scheduler)
    return (time.perf_counter() - t0, *_peak_rss_mb())


def _in_child(fn, *args):
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as ex:
        return ex.submit(fn, *args).result()


def _larch(mu, kw):
    from larch import Group
    from larch.xafs import pre_edge

    groups = []
    for j in range(mu.shape[1]):
        grp = Group()
        pre_edge(ENERGY, mu[:, j], group=grp, e0=None, step=None, nnorm=kw["nnorm"], nvict=0, npre=1,
                 pre1=kw["pre1"], pre2=kw["pre2"], norm1=kw["norm1"], norm2=None, make_flat=True)
        groups.append(grp)
    return groups


def _same_points_windows(e0, lo_rel, hi_rel):
    """Our inclusive window (relative to e0) selecting exactly larch's points energy[p1:p2]
    (p1: last energy <= e0+lo, 0 if none; p2: nearest to e0+hi, excluded)."""
    below = np.flatnonzero(ENERGY <= e0 + lo_rel)
    p1 = int(below[-1]) if below.size else 0
    p2 = int(np.argmin(np.abs(ENERGY - (e0 + hi_rel))))
    return ENERGY[p1] - e0, 0.5 * (ENERGY[p2 - 1] + ENERGY[p2]) - e0


def _step_se(e0, lo_rel, hi_rel, lo_post, hi_post, nnorm):
    """Standard error of the edge step from noise sd NOISE, for our inclusive windows at e0 (eV)."""
    var = 0.0
    for lo, hi, deg in ((lo_rel, hi_rel, 1), (lo_post, hi_post, nnorm)):
        u = ENERGY[(ENERGY >= e0 + lo) & (ENERGY <= e0 + hi)] - e0
        x = u[:, None] ** np.arange(deg + 1)
        var += np.linalg.inv(x.T @ x)[0, 0]  # variance of the fit at u = 0, per NOISE**2
    return NOISE * np.sqrt(var)


def _compare(label, e0_ours, mu, kw, groups, e0_true):
    from xafsflow.xas.normalize import normalize_edge

    e0_larch = np.array([grp.e0 for grp in groups])
    step_larch = np.array([grp.edge_step for grp in groups])
    de0 = np.abs(e0_ours - e0_larch)
    # larch's E0 is a measured energy (the point of largest smoothed derivative, no refinement between
    # points); ours is refined between points. Like with like: ours moved to the nearest measured energy.
    snapped = ENERGY[np.argmin(np.abs(ENERGY[:, None] - e0_ours[None, :]), axis=0)]
    step_here = np.diff(ENERGY)[np.clip(np.searchsorted(ENERGY, e0_larch) - 1, 0, N_E - 2)]
    same = snapped == e0_larch
    steps_apart = np.abs(snapped - e0_larch) / step_here
    truth = e0_true + _steepest_offset()  # where the model's slope is largest
    step_cfg = normalize_edge(ENERGY, mu, **{**kw, "e0": e0_larch}).edge_step
    d_cfg = np.abs(step_cfg / step_larch - 1.0)
    step_same = np.empty(mu.shape[1])
    se = np.empty(mu.shape[1])
    for j in range(mu.shape[1]):  # windows per pixel: the very points larch fitted
        pre = _same_points_windows(e0_larch[j], kw["pre1"], kw["pre2"])
        post = _same_points_windows(e0_larch[j], kw["norm1"], ENERGY[-1] - e0_larch[j])  # larch's norm2=None
        step_same[j] = normalize_edge(ENERGY, mu[:, j], e0=e0_larch[j], pre1=pre[0], pre2=pre[1], norm1=post[0],
                                      norm2=post[1], nnorm=kw["nnorm"]).edge_step
        se[j] = _step_se(e0_larch[j], kw["pre1"], kw["pre2"], kw["norm1"], ENERGY[-1] - e0_larch[j], kw["nnorm"])
    d_same = np.abs(step_same / step_larch - 1.0)
    print(f"  {label}: E0 (ours) - E0 (larch) median {np.median(de0):.3f} eV, max {de0.max():.3f} eV, "
          f"{np.mean(de0 <= 0.1) * 100:.1f} % within 0.1 eV")
    print(f"  {label}: E0 (ours) at the nearest measured energy = E0 (larch) for {np.mean(same) * 100:.1f} % "
          f"(max {steps_apart.max():.0f} measured steps apart)")
    for who, e0 in (("ours", e0_ours), ("larch", e0_larch)):
        d = np.abs(e0 - truth)
        print(f"  {label}: |E0 ({who}) - steepest rise of the model| median {np.median(d):.3f} eV, max {d.max():.3f} eV, "
              f"{np.mean(d <= 0.1) * 100:.1f} % within 0.1 eV")
    print(f"  {label}: edge step at larch's E0, configured windows: median |rel diff| {np.median(d_cfg) * 100:.3f} %, "
          f"max {d_cfg.max() * 100:.3f} %, {np.mean(d_cfg <= 0.007) * 100:.1f} % within 0.7 %; "
          f"windows selecting larch's points: max {d_same.max():.1e}")
    print(f"  {label}: noise sd {NOISE} gives our edge step a standard error of median "
          f"{np.median(se / step_cfg) * 100:.2f} % (max {np.max(se / step_cfg) * 100:.2f} %); |step (ours, configured) "
          f"- step (larch)| / that error: median {np.median(np.abs(step_cfg - step_larch) / se):.2f}, "
          f"max {np.max(np.abs(step_cfg - step_larch) / se):.2f}")


def larch_check(raw: Path, out: Path, n: int, seed: int = 0) -> None:
    from xafsflow.campaign import kind_params
    from xafsflow.io import store as st
    from xafsflow.steps import normalize_keywords

    g_raw, g_out = st.open_store(raw), st.open_store(out)
    ne, ny, nx = g_raw["mu"].shape
    r = np.random.default_rng(seed)
    flat_idx = np.sort(r.choice(ny * nx, n, replace=False))
    rows = np.unique(flat_idx // nx)
    mu_rows = {int(y): g_raw["mu"][:, int(y), :].astype(np.float64) for y in rows}
    mu = np.stack([mu_rows[int(i // nx)][:, i % nx] for i in flat_idx], axis=1)  # (E, n)
    e0_ours = g_out["e0"][...].ravel()[flat_idx]
    kw = normalize_keywords(kind_params("stack", PARAMS))  # what the step used (schema defaults filled in)
    t0 = time.perf_counter()
    groups = _larch(mu, kw)
    ms = (time.perf_counter() - t0) / n * 1e3
    print(f"xraylarch pre_edge: {ms:.2f} ms per spectrum ({n} random pixels)")
    # the same pixels without noise (same E0 and step draws): the methods' own difference; and the truth
    from xafsflow.imaging.pixels import find_e0_block
    from xafsflow.io.stacks import stack_chunks

    rows_per = stack_chunks((ne, ny, nx), 4096)[1]
    clean, centre = {}, {}
    for y in rows:
        y0 = (int(y) // rows_per) * rows_per
        if y0 not in clean:
            info = {None: {"array-location": [(0, ne), (y0, min(y0 + rows_per, ny)), (0, nx)]}}
            clean[y0] = _block(block_info=info, noise=0.0).astype(np.float64)
            centre[y0] = _block(block_info=info, truth=True)
    pick = [((int(i // nx) // rows_per) * rows_per, int(i // nx) % rows_per, i % nx) for i in flat_idx]
    mu0 = np.stack([clean[y0][:, yy, xx] for y0, yy, xx in pick], axis=1)
    e0_true = np.array([centre[y0][yy, xx] for y0, yy, xx in pick])
    _compare("noisy (the stack)", e0_ours, mu, kw, groups, e0_true)
    _compare("noiseless", find_e0_block(ENERGY, mu0, kw.get("smooth_ev", 0.5)), mu0, kw, _larch(mu0, kw), e0_true)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--side", type=int, default=1000, help="pixels per side")
    ap.add_argument("--cluster", action="store_true", help="also time scheduler='cluster'")
    ap.add_argument("--larch", type=int, default=2000, help="pixels for the xraylarch comparison (0: skip)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_normalize_", dir=os.environ.get("XAFSFLOW_SCRATCH")))
    try:
        raw = tmp / "raw.zarr"
        t0 = time.perf_counter()
        make_stack(raw, a.side)
        print(f"stack {a.side}x{a.side}x{N_E} float32 ({a.side * a.side * N_E * 4 / 1e6:.0f} MB) written in "
              f"{time.perf_counter() - t0:.1f} s; load {os.getloadavg()}", flush=True)
        modes = ["threads"] + (["cluster"] if a.cluster else [])
        res = {m: [] for m in ["io"] + modes}
        for rep in range(a.repeats):
            for m in ["io"] + modes:
                out = tmp / f"{m}.zarr"
                r = _in_child(run_io, str(raw), str(out)) if m == "io" else _in_child(run_step, str(raw), str(out), m)
                res[m].append(r)
                print(f"repeat {rep} {m}: {r[0]:.2f} s, peak RSS {max(r[1], r[2]):.0f} MB "
                      f"(load {os.getloadavg()[0]:.2f})", flush=True)
                if not (m == "threads" and rep == a.repeats - 1):
                    shutil.rmtree(out)
        for m in modes:
            ratio = [s[0] / i[0] for s, i in zip(res[m], res["io"])]
            ts = [s[0] for s in res[m]]
            print(f"{m}: median {np.median(ts):.2f} s [{min(ts):.2f}-{max(ts):.2f}], ratio to bare I/O median "
                  f"{np.median(ratio):.2f} [{min(ratio):.2f}-{max(ratio):.2f}], peak RSS median "
                  f"{np.median([max(s[1], s[2]) for s in res[m]]):.0f} MB")
        ti = [i[0] for i in res["io"]]
        print(f"io: median {np.median(ti):.2f} s [{min(ti):.2f}-{max(ti):.2f}], peak RSS median "
              f"{np.median([max(i[1], i[2]) for i in res['io']]):.0f} MB")
        if a.larch:
            larch_check(raw, tmp / "threads.zarr", a.larch)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
