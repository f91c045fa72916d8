"""Texture statistics and TDGL throughput, beside plenoptic's PortillaSimoncelli where it is installed.

    .venv/bin/python benchmarks/bench_domain.py [--repeats 5]

1. Portilla-Simoncelli statistics per second (xafsflow.domains.pss, 4 scales, 4 orientations,
   neighbourhood 7) on TDGL-like textures at 256x256 and 512x512, one image at a time and in a
   batch of 8; median and spread over repeats.
2. TDGL steps per second at 256x256 (one run, and a batch of 8 runs), float32 and float64.
3. plenoptic (torch) on the same images: its PortillaSimoncelli time beside ours as a ratio -- only
   where plenoptic is importable (it is not part of xafsflow's environment: it needs torch). The
   full comparison, with the correlation of the statistic groups whose definitions match, is
   bench_pss_plenoptic.py (run it in a benchmark-only venv with torch and plenoptic).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from xafsflow.domains import pss, tdgl  # noqa: E402
from xafsflow.domains.prepare import normalize_contrast  # noqa: E402


def textures(n: int, count: int) -> np.ndarray:
    """Domain-like test images: TDGL runs on an n x n grid with a fast sweep (cheap to make)."""
    p = tdgl.TDGLParams(alpha=0.0, n=n, v=0.1)
    runs = tdgl.run_batch(np.linspace(1.2, 2.2, count), p, list(range(count)))
    return normalize_contrast(np.stack([r["image"] for r in runs]))


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def spread(times: list[float], per: int) -> str:
    rates = per / np.array(times)
    return f"{np.median(rates):8.2f} /s  (min {rates.min():.2f}, max {rates.max():.2f}, {len(times)} repeats)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"numpy {np.__version__}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    try:
        import plenoptic  # noqa: F401

        have_peer = True
    except ImportError as exc:
        have_peer = False
        print(f"plenoptic not importable ({exc}): no peer ratio in this run (it needs torch)")

    for n in (256, 512):
        imgs = textures(n, 8)
        single = timed(lambda: pss.pss(imgs[0]), args.repeats)
        batch = timed(lambda: pss.pss(imgs), args.repeats)
        print(f"PSS {n}x{n} single: {spread(single, 1)}")
        print(f"PSS {n}x{n} batch 8: {spread(batch, 8)}")
        if have_peer:
            peer_compare(imgs, args.repeats)

    for precision in ("float32", "float64"):
        p = tdgl.TDGLParams(alpha=0.0, n=256, h0=2.2, v=2.2 / (0.25 * 200), precision=precision)  # 200 steps
        for count in (1, 8):
            times = timed(lambda: tdgl.run_batch(np.full(count, 1.8), p, list(range(count))), max(2, args.repeats // 2))
            print(f"TDGL 256x256 {precision}, {count} run(s) together: {spread(times, 200 * count)} run-steps")


def peer_compare(imgs: np.ndarray, repeats: int) -> None:
    """plenoptic's PortillaSimoncelli on the same images (only where torch and plenoptic exist):
    the timing of bench_pss_plenoptic.py (ratio per repeat, torch 2 and 1 threads)."""
    sys.path.insert(0, os.path.dirname(__file__))
    from bench_pss_plenoptic import timing

    timing(imgs, repeats)


if __name__ == "__main__":
    main()
