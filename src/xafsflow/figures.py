"""Figures (matplotlib, Agg backend), one PNG per product."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_scan(store: str | Path, png: str | Path) -> Path:
    """Plot a normalized scan store: raw mu with pre/post-edge lines and normalized mu."""
    from xafsflow.io.store import open_store

    g = open_store(store)
    attrs = dict(g.attrs)
    plt = _plt()
    kind = attrs.get("kind")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    if kind in ("xanes", "exafs", "xmcd"):
        e = g["energy"][...]
        axes[0].plot(e, g["mu"][...], "k.", ms=2, label="mu")
        axes[0].plot(e, g["pre_edge"][...], "b-", lw=1, label="pre-edge")
        axes[0].plot(e, g["post_edge"][...], "r-", lw=1, label="post-edge")
        axes[0].axvline(attrs["e0"], color="gray", lw=0.8)
        axes[0].set_xlabel("energy (eV)")
        axes[0].legend(fontsize=8)
        if kind == "xmcd":
            axes[1].plot(e, g["norm_plus"][...], label="plus")
            axes[1].plot(e, g["norm_minus"][...], label="minus")
            axes[1].plot(e, g["xmcd"][...], label="XMCD")
            axes[1].legend(fontsize=8)
        else:
            axes[1].plot(e, g["flat"][...], "k-", lw=1)
        axes[1].set_xlabel("energy (eV)")
        axes[1].set_ylabel("normalized mu")
        axes[0].set_title(f"{attrs['scan_id']}: E0 = {attrs['e0']:.2f} eV, step = {attrs['edge_step']:.4g}")
    elif kind == "spectrum":
        x = g["energy"][...]
        units = dict(g["energy"].attrs).get("units", "arbitrary")
        axes[0].plot(x, g["mu"][...], "k.", ms=2)
        axes[0].set_xlabel(f"x ({units})")
        axes[0].set_ylabel("y")
        axes[0].set_title(f"{attrs['scan_id']}: spectrum ({x.size} points, no normalization)")
        axes[1].plot(x, g["norm"][...], "k-", lw=1)
        axes[1].set_xlabel(f"x ({units})")
    elif kind == "stack":
        im = axes[0].imshow(g["e0"][...], cmap="viridis")
        fig.colorbar(im, ax=axes[0], label="E0 (eV)")
        im = axes[1].imshow(g["edge_step"][...], cmap="magma")
        fig.colorbar(im, ax=axes[1], label="edge step")
        axes[0].set_title(f"{attrs['scan_id']}: per-pixel E0 and edge step")
    else:
        img = g["image"][...]
        axes[0].imshow(img, cmap="gray")
        axes[1].hist(np.ravel(img), bins=64, color="k")
        axes[0].set_title(f"{attrs['scan_id']}")
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png
