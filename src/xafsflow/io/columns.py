"""Plain column ASCII spectra, and the column-mapping logic shared with XDI files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xafsflow.errors import AnalysisInputError, FileFormatError


@dataclass
class ColumnFile:
    """A whitespace-separated numeric table with optional '#' comment header."""

    path: str
    labels: list[str]
    data: np.ndarray
    header: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _is_number(tok: str) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return True


def read_columns(path: str | Path) -> ColumnFile:
    """Read a plain column file.

    Lines starting with ``#`` (or ``!``/``;``) before the data are header; the last
    header line whose token count equals the number of data columns gives the
    labels (else a first non-numeric line does, else ``col1..colN``). Every data
    row must have the same number of finite numbers.

    Raises
    ------
    FileFormatError
        Naming the file and line: unreadable text, ragged rows, non-numbers, NaN/inf.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise FileFormatError(f"cannot read file: {exc.strerror}", path) from None
    except UnicodeDecodeError as exc:
        raise FileFormatError(f"not a text file (byte {exc.start} is not UTF-8)", path) from None
    header: list[str] = []
    label_line: list[str] | None = None
    rows: list[list[float]] = []
    ncol = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s:
            continue
        if not rows and s[0] in "#!;":
            header.append(s.lstrip("#!; ").strip())
            continue
        toks = s.split()
        if not rows and not all(_is_number(t) for t in toks):
            if label_line is None:
                label_line = toks
                continue
        if ncol is None:
            ncol = len(toks)
        if len(toks) != ncol:
            raise FileFormatError(f"row has {len(toks)} values, expected {ncol} like the first data row", path, lineno)
        try:
            vals = [float(t) for t in toks]
        except ValueError:
            bad = next(t for t in toks if not _is_number(t))
            raise FileFormatError(f"{bad!r} is not a number", path, lineno) from None
        if not np.all(np.isfinite(vals)):
            raise FileFormatError("non-finite value (nan or inf) in data", path, lineno)
        rows.append(vals)
    if not rows:
        raise FileFormatError("no data rows", path)
    if label_line is None:
        for h in reversed(header):
            toks = h.split()
            if len(toks) == ncol:
                label_line = toks
                break
    if label_line is None or len(label_line) != ncol:
        labels = [f"col{i + 1}" for i in range(ncol)]
    else:
        labels = [t.lower() for t in label_line]
    return ColumnFile(str(path), labels, np.asarray(rows, dtype=np.float64), header)


def column_labels(path: str | Path, fmt: str) -> list[str]:
    """Column labels of an XDI or plain column file (reads the whole small file)."""
    if fmt == "xdi":
        from xafsflow.io.xdi import read_xdi

        return list(read_xdi(path).column_labels)
    return read_columns(path).labels


def count_data_rows(path: str | Path) -> int:
    """Lines of a spectrum file that start like a number: an upper bound on its data rows, read cheaply.

    Used before any job runs to refuse parameters no spectrum of the file can
    support, so it must not parse the file (a campaign has thousands).
    """
    n = 0
    with open(path, "rb") as fh:
        for line in fh:
            s = line.lstrip()
            if s[:1] and s[:1] in b"0123456789+-.":
                n += 1
    return n


def pick_column(labels: list[str], data: np.ndarray, spec: str, path: str, what: str) -> np.ndarray:
    """Column ``spec`` (a label, case-insensitive, or a 1-based index) of ``data``."""
    if spec.isdigit():
        i = int(spec) - 1
        if not 0 <= i < data.shape[1]:
            raise AnalysisInputError(f"{what} column {spec} out of range (file has {data.shape[1]} columns)", path)
        return data[:, i]
    low = [lb.lower() for lb in labels]
    if spec.lower() not in low:
        raise AnalysisInputError(
            f"{what} column {spec!r} not found (columns: {', '.join(labels)})", path
        )
    return data[:, low.index(spec.lower())]


# Columns tried, in order, when the sheet gives no mapping (XDI dictionary names).
_AUTO_MU = (("mutrans",), ("mufluor",), ("mu",), ("i0", "itrans"), ("i0", "ifluor"))


def absorption(labels: list[str], data: np.ndarray, mapping: dict, path: str) -> tuple[np.ndarray, str]:
    """mu(E) from a table and a column mapping, and a description of how it was made.

    ``mapping`` may name ``mu`` directly, or ``i0`` with ``itrans`` (mu = ln(i0/itrans))
    or ``ifluor`` (mu = ifluor/i0). Without a mapping the XDI names are tried in order:
    mutrans, mufluor, mu, i0+itrans, i0+ifluor.
    """
    if "mu" in mapping:
        return pick_column(labels, data, mapping["mu"], path, "mu"), f"column {mapping['mu']}"
    if "i0" in mapping and ("itrans" in mapping or "ifluor" in mapping):
        cols = {k: pick_column(labels, data, mapping[k], path, k) for k in ("i0", "itrans", "ifluor") if k in mapping}
        return _from_intensities(cols, path)
    low = [lb.lower() for lb in labels]
    for names in _AUTO_MU:
        if all(n in low for n in names):
            if len(names) == 1:
                return data[:, low.index(names[0])], f"column {names[0]}"
            cols = {n: data[:, low.index(n)] for n in names}
            return _from_intensities(cols, path)
    raise AnalysisInputError(
        "no absorption column: give 'mu', or 'i0' with 'itrans'/'ifluor' in the scan sheet "
        f"(columns: {', '.join(labels)})",
        path,
    )


def _from_intensities(cols: dict, path: str) -> tuple[np.ndarray, str]:
    i0 = cols["i0"]
    if "itrans" in cols:
        it = cols["itrans"]
        if np.any(i0 <= 0) or np.any(it <= 0):
            raise AnalysisInputError("transmission needs positive i0 and itrans (mu = ln(i0/itrans))", path)
        return np.log(i0 / it), "ln(i0/itrans)"
    if np.any(i0 == 0):
        raise AnalysisInputError("fluorescence needs non-zero i0 (mu = ifluor/i0)", path)
    return cols["ifluor"] / i0, "ifluor/i0"
