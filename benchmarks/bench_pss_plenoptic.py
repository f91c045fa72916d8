"""Our Portilla-Simoncelli statistics beside plenoptic's PortillaSimoncelli (torch): time and agreement.

Runs in a benchmark-only environment that has torch and plenoptic (they are not xafsflow
dependencies), e.g.::

    python3 -m venv /work/benchvenv-plenoptic
    /work/benchvenv-plenoptic/bin/pip install torch==2.13.0 plenoptic numpy scipy
    /work/benchvenv-plenoptic/bin/pip install --no-deps -e .
    nice -n 10 /work/benchvenv-plenoptic/bin/python benchmarks/bench_pss_plenoptic.py [--repeats 3]

1. Time. TDGL images (xafsflow.domains.tdgl, fast sweep) at 256x256 and 512x512, one image and a
   batch of 8. Ours: ``xafsflow.domains.pss.pss`` (4 scales, 4 orientations, neighbourhood 7,
   float64, one thread: OPENBLAS_NUM_THREADS=1 unless set). Peer:
   ``plenoptic.models.PortillaSimoncelli(n_scales=4, n_orientations=4, spatial_corr_width=7)``
   in float64 and float32 with torch threads = 2, and float64 with 1 thread (on a loaded 2-core
   machine torch's second thread can cost more than it gives); model built outside the timing,
   one warm-up call, ``torch.no_grad()``. Each repeat runs ours and the peer
   back to back, and the ratio peer/ours is taken per repeat (so a burst of load hits both);
   median and range over repeats.
2. Agreement, on 16 TDGL images at 256x256 over alpha in [1.0, 2.4]: the statistic groups whose
   definitions agree (listed in :func:`matched`), each entry of ours mapped onto plenoptic's. Two
   numbers per group: the Pearson correlation of all (image, entry) pairs pooled, and the median
   over entries of the per-entry correlation across images (what a PCA on standardized statistics
   sees). Overall: the pooled correlation of the per-entry standardized (z-scored across images)
   matched statistics.

Where the definitions differ:
- both pyramids are subsampled (level s on a grid 2^s coarser; ours crops each level's spectrum to
  its band-limited grid, plenoptic's likewise) and both take the parent of a cross-scale
  correlation Fourier-upsampled onto the child's grid. (Before 2026-12-02 ours was not
  subsampled; see benchmarks/README.md.)
- plenoptic's "reconstructed" low-pass images carry each radial filter twice (analysis and
  synthesis), ours once (image times lo_0 ... lo_s): low-pass moments and auto-correlations are
  only approximately the same quantity.
- plenoptic's pixel variance is the unbiased one (N - 1), ours the population one (N).
- plenoptic normalizes auto-correlations by the lag-0 value; ours are auto-covariances, so ours
  are divided by their lag-0 entry here, and the lag-0 entries compared as standard deviations
  (plenoptic's ``magnitude_std``, ``std_reconstructed``) -- which differ from ours by a constant
  factor per level (plenoptic's coarse-grid scaling), so only their per-entry correlation means
  anything.
- plenoptic's cross-scale real correlations use the phase-doubled parent without removing its
  mean; ours centre it.
- Not compared (no counterpart in plenoptic): our ``magnitude_mean``, ``real_variance``,
  ``cross_orientation_real``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

# ours runs on one thread: NumPy's OpenBLAS (the small Gram matrices of the correlations) is kept to one
# thread, set before NumPy loads; torch's threads are set per row below
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from xafsflow.domains import pss, tdgl  # noqa: E402
from xafsflow.domains.prepare import normalize_contrast  # noqa: E402

S, K, NA = 4, 4, 7
H = NA // 2


def textures(n: int, alphas, seed0: int = 0) -> np.ndarray:
    """TDGL runs on an n x n grid with a fast sweep, contrast-normalized (as bench_domain.py)."""
    p = tdgl.TDGLParams(alpha=0.0, n=n, v=0.1)
    runs = tdgl.run_batch(np.asarray(alphas, float), p, [seed0 + i for i in range(len(alphas))])
    return normalize_contrast(np.stack([r["image"] for r in runs]))


def paired(fn_ours, fn_peer, repeats: int):
    """Times (s) of ours and the peer, run back to back in each repeat (after one warm-up each)."""
    fn_ours()
    fn_peer()
    t_o, t_p = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        fn_ours()
        t_o.append(time.perf_counter() - t)
        t = time.perf_counter()
        fn_peer()
        t_p.append(time.perf_counter() - t)
    return np.array(t_o), np.array(t_p)


def timing(imgs: np.ndarray, repeats: int) -> list[str]:
    import plenoptic as po
    import torch

    n = imgs.shape[-1]
    lines = []
    for dtype, threads in ((torch.float64, 2), (torch.float32, 2), (torch.float64, 1)):
        torch.set_num_threads(threads)
        model = po.models.PortillaSimoncelli((n, n), n_scales=S, n_orientations=K,
                                             spatial_corr_width=NA).to(dtype)
        x = torch.tensor(imgs[:, None], dtype=dtype)
        for count in (1, len(imgs)):
            with torch.no_grad():
                t_o, t_p = paired(lambda: pss.pss(imgs[0] if count == 1 else imgs[:count]),
                                  lambda: model(x[:count]), repeats)
            ratio = t_p / t_o
            what = "single" if count == 1 else f"batch {count}"
            lines.append(f"{n}x{n} {what:8s} plenoptic {str(dtype)[6:]} {threads} thr: ours "
                         f"{np.median(t_o) / count * 1e3:7.1f} ms/image "
                         f"({t_o.min() / count * 1e3:.1f}-{t_o.max() / count * 1e3:.1f}), plenoptic "
                         f"{np.median(t_p) / count * 1e3:7.1f} ms/image ({t_p.min() / count * 1e3:.1f}-"
                         f"{t_p.max() / count * 1e3:.1f}); ratio plenoptic/ours {np.median(ratio):.2f} "
                         f"({ratio.min():.2f}-{ratio.max():.2f}, {repeats} repeats)")
            print(lines[-1], flush=True)
    torch.set_num_threads(2)
    return lines


def _lag_value(ac: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """plenoptic's auto-correlation (..., Na, Na, ...) is stored with NaN in redundant places; take
    (dy, dx) or its point mirror (-dy, -dx), which is equal."""
    a = ac[:, H + dy, H + dx]
    b = ac[:, H - dy, H - dx]
    return np.where(np.isnan(a), b, a)


def matched(ours: np.ndarray, d: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Matched groups: name -> (ours (n_img, m), plenoptic (n_img, m))."""
    names = pss.statistic_names(S, K, NA)
    idx = {nm: i for i, nm in enumerate(names)}
    P = {k: v[:, 0].numpy() for k, v in d.items()}  # drop the channel axis
    lags = [lag for lag in pss._half_lags(NA) if lag != (0, 0)]

    def o(name):
        return ours[:, idx[name]]

    out = {}
    pix = ["mean", "variance", "skewness", "kurtosis", "min", "max"]
    out["pixel (6)"] = (np.stack([o(f"pixel.{m}") for m in pix], 1), P["pixel_statistics"])
    out["highpass_variance (1)"] = (o("highpass_variance")[:, None], P["var_highpass_residual"])
    a, b = [], []
    for s in range(S):
        for k in range(K):
            v0 = o(f"magnitude_autocorr.s{s}.o{k}.dy0.dx0")
            for dy, dx in lags:
                a.append(o(f"magnitude_autocorr.s{s}.o{k}.dy{dy}.dx{dx}") / v0)
                b.append(_lag_value(P["auto_correlation_magnitude"][..., k, s], dy, dx))
    out["magnitude_autocorr / lag 0"] = (np.stack(a, 1), np.stack(b, 1))
    out["magnitude std (lag 0)"] = (
        np.stack([np.sqrt(o(f"magnitude_autocorr.s{s}.o{k}.dy0.dx0")) for s in range(S) for k in range(K)], 1),
        np.stack([P["magnitude_std"][:, k, s] for s in range(S) for k in range(K)], 1))
    out["cross_orientation_magnitude"] = (
        np.stack([o(f"cross_orientation_magnitude.s{s}.o{k}.o{m}") for s in range(S) for k in range(K)
                  for m in range(k + 1, K)], 1),
        np.stack([P["cross_orientation_correlation_magnitude"][:, m, k, s] for s in range(S) for k in range(K)
                  for m in range(k + 1, K)], 1))
    out["cross_scale_magnitude"] = (
        np.stack([o(f"cross_scale_magnitude.s{s}.o{k}.p{m}") for s in range(S - 1) for k in range(K)
                  for m in range(K)], 1),
        np.stack([P["cross_scale_correlation_magnitude"][:, k, m, s] for s in range(S - 1) for k in range(K)
                  for m in range(K)], 1))
    out["cross_scale_real"] = (
        np.stack([o(f"cross_scale_real.s{s}.o{k}.p{m}.{part}") for s in range(S - 1) for k in range(K)
                  for m in range(K) for part in ("re", "im")], 1),
        np.stack([P["cross_scale_correlation_real"][:, k, m + K * j, s] for s in range(S - 1) for k in range(K)
                  for m in range(K) for j in (0, 1)], 1))
    # approximately matched: the low-passed images differ by one application of the radial filters
    out["~lowpass skewness+kurtosis"] = (
        np.stack([o(f"lowpass_moments.s{s}.{m}") for s in range(S + 1) for m in ("skewness", "kurtosis")], 1),
        np.stack([P[f"{m}_reconstructed"][:, s] for s in range(S + 1) for m in ("skew", "kurtosis")], 1))
    a, b = [], []
    for s in range(S + 1):
        v0 = o(f"lowpass_autocorr.s{s}.dy0.dx0")
        for dy, dx in lags:
            a.append(o(f"lowpass_autocorr.s{s}.dy{dy}.dx{dx}") / v0)
            b.append(_lag_value(P["auto_correlation_reconstructed"][..., s], dy, dx))
    out["~lowpass_autocorr / lag 0"] = (np.stack(a, 1), np.stack(b, 1))
    out["~lowpass std (lag 0)"] = (
        np.stack([np.sqrt(o(f"lowpass_autocorr.s{s}.dy0.dx0")) for s in range(S + 1)], 1),
        P["std_reconstructed"])
    return out


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def _z(a: np.ndarray) -> np.ndarray:
    sd = a.std(axis=0)
    keep = sd > 1e-12 * (np.abs(a).max(axis=0) + 1e-300)
    return (a[:, keep] - a[:, keep].mean(axis=0)) / sd[keep], keep


def agreement(imgs: np.ndarray) -> list[str]:
    import plenoptic as po
    import torch

    n = imgs.shape[-1]
    model = po.models.PortillaSimoncelli((n, n), n_scales=S, n_orientations=K, spatial_corr_width=NA).to(torch.float64)
    with torch.no_grad():
        d = model.convert_to_dict(model(torch.tensor(imgs[:, None], dtype=torch.float64)))
    ours = pss.pss(imgs, S, K, NA)
    groups = matched(ours, d)
    lines = [f"agreement on {len(imgs)} TDGL images {n}x{n}: group (entries): pooled r | median per-entry r "
             "across images (min) | median |ours - plenoptic|"]
    za, zb = [], []
    for name, (a, b) in groups.items():
        assert not np.isnan(b).any(), name
        per = []
        for j in range(a.shape[1]):
            if a[:, j].std() > 0 and b[:, j].std() > 0:
                per.append(_pearson(a[:, j], b[:, j]))
        per = np.array(per)
        lines.append(f"  {name:32s} ({a.shape[1]:3d}): pooled {_pearson(a.ravel(), b.ravel()):7.4f} | per-entry "
                     f"{np.median(per):7.4f} (min {per.min():.4f}; 1 - min {1 - per.min():.1e}) | "
                     f"{np.median(np.abs(a - b)):.3g}")
        if not name.startswith("~"):
            ka, keep = _z(a)
            kb, keep_b = _z(b[:, keep])
            za.append(ka[:, keep_b])
            zb.append(kb)
    za, zb = np.concatenate(za, 1), np.concatenate(zb, 1)
    r_all = _pearson(za.ravel(), zb.ravel())
    lines.append(f"  overall (exactly-defined groups, {za.shape[1]} entries z-scored across images): "
                 f"pooled r {r_all:.4f} (1 - r = {1 - r_all:.1e})")
    for line in lines:
        print(line, flush=True)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--agreement-images", type=int, default=16)
    args = ap.parse_args()
    import plenoptic as po
    import torch

    torch.set_num_threads(2)
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, numpy "
          f"{np.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), plenoptic "
          f"{po.__version__}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS')}; load average at start {load}",
          flush=True)
    t0 = time.perf_counter()
    agreement(textures(256, np.linspace(1.0, 2.4, args.agreement_images), seed0=100))
    for n in args.sizes:
        timing(textures(n, np.linspace(1.2, 2.2, 8)), args.repeats)
    cpu = time.process_time()
    print(f"wall {time.perf_counter() - t0:.0f} s, CPU {cpu:.0f} s; load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
