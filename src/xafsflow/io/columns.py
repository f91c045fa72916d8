"""Plain column ASCII spectra, 1-D ``xy`` spectra, and the column-mapping logic shared with XDI files."""

from __future__ import annotations

import re
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


def _read_text(path: Path, encoding: str) -> str:
    """A text file's contents; a FileFormatError naming the file when it is unreadable or not UTF-8."""
    try:
        return path.read_bytes().decode(encoding)
    except OSError as exc:
        raise FileFormatError(f"cannot read file: {exc.strerror}", path) from None
    except UnicodeDecodeError as exc:
        raise FileFormatError(f"not a text file (byte {exc.start} is not UTF-8)", path) from None


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
    text = _read_text(path, "utf-8")
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


# ------------------------------------------------------------------------------ xy spectra
# Separators of an ``xy`` file: commas (with any surrounding blanks) or runs of blanks/tabs.
_XY_SPLIT = re.compile(r"\s*,\s*|\s+")
# Sheet fields of an ``xy`` row: columns picked from the file, x made from a start and a step, x's unit.
XY_FIELDS = ("x", "y", "x_start", "x_step", "x_unit")


@dataclass
class XYSpectrum:
    """One 1-D spectrum: strictly increasing ``x`` and its ``y``, with how they were read."""

    path: str
    x: np.ndarray
    y: np.ndarray
    labels: list[str]
    x_from: str
    y_from: str
    header: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _xy_tokens(line: str) -> list[str]:
    s = line.split("#", 1)[0].strip()
    return _XY_SPLIT.split(s) if s else []


def _xy_lines(path: Path):
    """Yield ``(line number, tokens)`` of the non-empty, non-comment lines of an ``xy`` file."""
    text = _read_text(path, "utf-8-sig")
    for lineno, line in enumerate(text.splitlines(), start=1):
        toks = _xy_tokens(line)
        if toks:
            yield lineno, toks


def xy_layout(path: str | Path) -> tuple[list[str], int]:
    """(column labels, number of columns) of an ``xy`` file from its header and first data line.

    Cheap (stops at the first data line), for the scan sheet checks before any job runs.
    """
    path = Path(path)
    label_line = None
    for lineno, toks in _xy_lines(path):
        if all(_is_number(t) for t in toks):
            ncol = len(toks)
            if label_line is not None and len(label_line) != ncol:
                label_line = None
            return ([t.lower() for t in label_line] if label_line else [f"col{i + 1}" for i in range(ncol)]), ncol
        if label_line is not None:
            raise FileFormatError("a second non-numeric line before the data (only one header line is allowed; "
                                  "comment other lines with '#')", path, lineno)
        label_line = toks
    raise FileFormatError("no data rows", path)


def xy_fields_problem(fields: dict) -> tuple[str, str] | None:
    """What is wrong with an ``xy`` row's x fields on their own (no file needed): ``(field, message)`` or None."""
    has_start, has_step = fields.get("x_start") is not None, fields.get("x_step") is not None
    if has_start != has_step:
        missing = "x_step" if has_start else "x_start"
        return missing, "x_start and x_step go together (x = x_start + i * x_step)"
    if has_start and "x" in fields:
        return "x", "give either the x column or x_start/x_step, not both"
    if has_start:
        try:
            if not float(fields["x_step"]) > 0:
                return "x_step", f"x_step must be positive, got {fields['x_step']!r}"
            float(fields["x_start"])
        except (TypeError, ValueError):
            bad = "x_step" if not _is_number(str(fields["x_step"])) else "x_start"
            return bad, f"{fields[bad]!r} is not a number"
    return None


def xy_selection_problem(labels: list[str], ncol: int, fields: dict) -> tuple[str, str] | None:
    """Why the sheet ``fields`` cannot pick x and y from a file with these columns: ``(field, message)``, or None.

    Rules: ``x_start`` and ``x_step`` come together and exclude ``x``; a one-column file is y and needs
    them; a two-column file is (x, y) unless ``x``/``y`` say otherwise; a wider file needs ``y`` and
    ``x`` (or ``x_start``/``x_step``). ``x``/``y`` are a label (case-insensitive) or a 1-based index.
    """
    problem = xy_fields_problem(fields)
    if problem is not None:
        return problem
    has_start = fields.get("x_start") is not None
    for key in ("x", "y"):
        spec = fields.get(key)
        if spec is None:
            continue
        spec = str(spec)
        ok = 1 <= int(spec) <= ncol if spec.isdigit() else spec.lower() in labels
        if not ok:
            return key, f"column {spec!r} is not in the file (its columns: {', '.join(labels)})"
    if ncol == 1 and not has_start:
        return "x_start", "a one-column file holds y only: give x_start and x_step (x = x_start + i * x_step)"
    if ncol > 2 and "y" not in fields:
        return "y", f"the file has {ncol} columns: name the y column (and x, or x_start/x_step)"
    if ncol > 2 and not has_start and "x" not in fields:
        return "x", f"the file has {ncol} columns: name the x column, or give x_start/x_step"
    if ncol == 2 and has_start and "y" not in fields:
        return "y", "x comes from x_start/x_step but the file has two columns: name the y column"
    return None


def _column_index(labels: list[str], spec) -> int:
    spec = str(spec)
    return int(spec) - 1 if spec.isdigit() else labels.index(spec.lower())


def read_xy(path: str | Path, fields: dict | None = None) -> XYSpectrum:
    """Read a 1-D spectrum from an ``xy`` text file (scan sheet format ``xy``).

    Format: numbers separated by commas, tabs or blanks; ``#`` starts a comment
    (whole lines or the rest of a line); blank lines are skipped; one
    non-numeric line before the data may give column labels. Every data row
    has the same number of finite numbers. Which columns are x and y follows
    :func:`xy_selection_problem` (sheet fields ``x``, ``y``, ``x_start``,
    ``x_step``). Rows are sorted by x (a warning says so); x must then be
    strictly increasing: a repeated x is refused rather than averaged, since
    an average has a smaller noise than its neighbours and the posterior
    assumes one noise level for every point.

    Raises
    ------
    FileFormatError
        Naming the file and line: unreadable text, a second header line,
        ragged rows, non-numbers, NaN/inf, fewer than 3 points, a repeated x.
    AnalysisInputError
        The sheet fields cannot pick x and y from this file.
    """
    path = Path(path)
    fields = dict(fields or {})
    header: list[str] = []
    label_line: list[str] | None = None
    rows: list[list[float]] = []
    linenos: list[int] = []
    ncol = None
    for lineno, toks in _xy_lines(path):
        if not rows and not all(_is_number(t) for t in toks):
            if label_line is not None:
                raise FileFormatError("a second non-numeric line before the data (only one header line is "
                                      "allowed; comment other lines with '#')", path, lineno)
            label_line = toks
            continue
        if ncol is None:
            ncol = len(toks)
        if len(toks) != ncol:
            raise FileFormatError(f"row has {len(toks)} values, expected {ncol} like the first data row", path, lineno)
        bad = next((t for t in toks if not _is_number(t)), None)
        if bad is not None:
            raise FileFormatError(f"{bad!r} is not a number", path, lineno)
        vals = [float(t) for t in toks]
        if not all(np.isfinite(vals)):
            raise FileFormatError("non-finite value (nan or inf) in data", path, lineno)
        rows.append(vals)
        linenos.append(lineno)
    if ncol is None:
        raise FileFormatError("no data rows", path)
    if len(rows) < 3:
        raise FileFormatError(f"{len(rows)} data row(s); a spectrum needs at least 3 points", path)
    labels = ([t.lower() for t in label_line] if label_line and len(label_line) == ncol
              else [f"col{i + 1}" for i in range(ncol)])
    if label_line is not None and len(label_line) != ncol:
        header.append(" ".join(label_line))
    problem = xy_selection_problem(labels, ncol, fields)
    if problem is not None:
        raise AnalysisInputError(f"sheet field {problem[0]!r}: {problem[1]}", path)
    data = np.asarray(rows, dtype=np.float64)
    warnings: list[str] = []
    if fields.get("x_start") is not None:
        start, step = float(fields["x_start"]), float(fields["x_step"])
        y_col = _column_index(labels, fields["y"]) if "y" in fields else 0
        x = start + step * np.arange(data.shape[0])
        y = data[:, y_col]
        return XYSpectrum(str(path), x, y.copy(), labels, f"x_start {start:g} + i * x_step {step:g}",
                          f"column {labels[y_col]}", header, warnings)
    x_col = _column_index(labels, fields["x"]) if "x" in fields else 0
    y_col = _column_index(labels, fields["y"]) if "y" in fields else 1
    x, y = data[:, x_col], data[:, y_col]
    lines = np.asarray(linenos)
    d = np.diff(x)
    if np.any(d <= 0):
        order = np.argsort(x, kind="stable")
        x, y, lines = x[order], y[order], lines[order]
        dup = np.flatnonzero(np.diff(x) == 0)
        if dup.size:
            i = int(dup[0])
            first, second = sorted((int(lines[i]), int(lines[i + 1])))
            raise FileFormatError(f"x = {x[i]:g} repeats line {first} (each point needs its own x; "
                                  "average or drop repeated points before the analysis)", path, second)
        warnings.append("x was decreasing; reversed" if np.all(d < 0) else "x was not increasing; rows sorted by x")
    return XYSpectrum(str(path), x.copy(), y.copy(), labels, f"column {labels[x_col]}", f"column {labels[y_col]}",
                      header, warnings)
