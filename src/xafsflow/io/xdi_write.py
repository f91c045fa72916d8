"""Write XDI 1.0 files (used for simulated campaigns and exports)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_xdi(
    path: str | Path,
    columns: list[tuple[str, str, np.ndarray]],
    fields: dict[str, dict[str, str]],
    comments: str = "",
    extra_version: str = "xafsflow/0.1",
) -> Path:
    """Write an XDI 1.0 file.

    Parameters
    ----------
    columns : list of (name, units, values); the first is the energy axis.
    fields : {"Family": {"key": "value"}}, e.g. {"Element": {"symbol": "Cu", "edge": "K"}}.
    comments : free user comment lines.
    """
    path = Path(path)
    lines = [f"# XDI/1.0 {extra_version}".rstrip()]
    for i, (name, units, _) in enumerate(columns, start=1):
        lines.append(f"# Column.{i}: {name} {units}".rstrip())
    for fam, kv in fields.items():
        for key, value in kv.items():
            lines.append(f"# {fam}.{key}: {value}")
    lines.append("# ///")
    for c in (comments or "").splitlines():
        lines.append(f"# {c}")
    lines.append("#----")
    lines.append("# " + " ".join(name for name, _, _ in columns))
    data = np.column_stack([np.asarray(v, dtype=float) for _, _, v in columns])
    body = "\n".join("  " + "  ".join(f"{x:.10g}" for x in row) for row in data)
    path.write_text("\n".join(lines) + "\n" + body + "\n")
    return path
