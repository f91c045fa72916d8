"""Every path under ``results/<campaign>/``, for the rules and the summary alike.

Each function takes a scan id (or a wildcard pattern such as ``"{scan_id}"``,
which the rules pass) and returns a :class:`pathlib.Path`; no other module
writes a results path pattern.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """Paths of one campaign's results.

    Parameters
    ----------
    root : Path
        ``<results>/<campaign>``.
    """

    root: Path

    @classmethod
    def of(cls, results: str | Path, campaign: str) -> "Layout":
        return cls(Path(results) / campaign)

    # ------------------------------------------------------------------ scans
    def raw_store(self, scan_id: str) -> Path:
        """Ingested (raw) store of one scan."""
        return self.root / "raw" / f"{scan_id}.zarr"

    def scan_store(self, scan_id: str) -> Path:
        """Normalized scan store."""
        return self.root / "scans" / f"{scan_id}.zarr"

    def scan_figure(self, scan_id: str) -> Path:
        return self.root / "scans" / f"{scan_id}.png"

    # --------------------------------------------------------------- products
    def _product_stem(self, product, scan_id: str) -> Path:
        part = f".{product.part}" if product.part else ""
        return self.root / product.directory / f"{scan_id}{part}"

    def product_store(self, product, scan_id: str) -> Path:
        """Store of ``product`` (a :class:`xafsflow.products.Product`) for one scan."""
        return Path(f"{self._product_stem(product, scan_id)}.zarr")

    def product_table(self, product, scan_id: str) -> Path:
        return Path(f"{self._product_stem(product, scan_id)}.tsv")

    def product_figure(self, product, scan_id: str) -> Path:
        return Path(f"{self._product_stem(product, scan_id)}.png")

    def checkpoints(self, step: str, scan_id: str) -> Path:
        """Checkpoints of a long step, outside its outputs so an interrupted job can resume."""
        return self.root / "checkpoints" / step / scan_id

    def resources(self, name: str) -> Path:
        """A campaign-wide cache shared by every job (e.g. ``feff``: FEFF calculations keyed by their inputs)."""
        return self.root / "resources" / name

    # ------------------------------------------------------- logs, benchmarks
    def log(self, step: str, scan_id: str) -> Path:
        """Log of one step of one scan (``campaign`` for campaign-level steps)."""
        return self.root / "logs" / step / f"{scan_id}.log"

    def benchmark(self, step: str, scan_id: str) -> Path:
        return self.root / "benchmarks" / step / f"{scan_id}.tsv"

    # ----------------------------------------------------------- the campaign
    @property
    def summary_table(self) -> Path:
        return self.root / "summary.tsv"

    @property
    def report(self) -> Path:
        return self.root / "report.html"
