"""Reader for XAS Data Interchange (XDI) 1.0 files.

An XDI file is plain text laid out as::

    # XDI/1.0 GSE/1.0                  <- version line, optional extra versions
    # Column.1: energy eV              <- header fields "# Family.Key: value"
    # Element.symbol: Cu
    # ///                              <- optional start of free user comments
    # Cu foil, room temperature
    #----                              <- end of header
    # energy i0 itrans                 <- column-label line
      8779.0  149013.7  550643.08      <- whitespace-separated numeric rows

:func:`read_xdi` returns an :class:`XDIFile`. Anything that makes the file
unreadable (no version line, malformed header field, ragged or non-numeric
data table, ...) raises :class:`~xafsflow.errors.FileFormatError` naming the
file and the 1-based line. Problems that still leave a usable file (missing
or invalid element/edge, missing separator, missing column labels, bad
date-time, ...) are collected in :attr:`XDIFile.warnings`, each naming the
line it concerns.

:func:`energy_axis` turns the file's ``energy`` column (eV or keV) or its
``angle`` column plus ``Mono.d_spacing`` into an energy axis in eV.
"""

from __future__ import annotations

import copy
import math
import os
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xafsflow.errors import AnalysisInputError, FileFormatError, InputError

__all__ = [
    "XDIFile",
    "ColumnNotFoundError",
    "read_xdi",
    "energy_axis",
    "HC_EV_ANGSTROM",
    "ELEMENT_SYMBOLS",
    "EDGE_NAMES",
]

#: Planck constant times speed of light, in eV * Angstrom (CODATA 2018).
HC_EV_ANGSTROM = 12398.419843320026

#: Chemical element symbols, Z = 1 .. 118, in order.
ELEMENT_SYMBOLS: tuple[str, ...] = tuple(
    """
    H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni
    Cu Zn Ga Ge As Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I
    Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt
    Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr
    Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og
    """.split()
)

#: Absorption-edge names accepted for ``Element.edge``.
EDGE_NAMES: frozenset[str] = frozenset(
    ["K", "L", "M", "N", "O", "P"]
    + [f"L{i}" for i in range(1, 4)]
    + [f"M{i}" for i in range(1, 6)]
    + [f"N{i}" for i in range(1, 8)]
    + [f"O{i}" for i in range(1, 8)]
    + [f"P{i}" for i in range(1, 4)]
)

_SYMBOL_LOOKUP = {s.lower(): s for s in ELEMENT_SYMBOLS}

_VERSION_RE = re.compile(r"^#\s*XDI/(\S*)(.*)$", re.IGNORECASE)
_SEPARATOR_RE = re.compile(r"^#\s*-{3,}[-\s]*$")
_FAMILY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_]+$")
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER_RE = re.compile(rf"^{_NUMBER}$")
_ROW_RE = re.compile(rf"^{_NUMBER}(?:\s+{_NUMBER})*$")
_NAN_RE = re.compile(r"^[+-]?nan$", re.IGNORECASE)
_INF_RE = re.compile(r"^[+-]?inf(inity)?$", re.IGNORECASE)
_QUANTITY_RE = re.compile(rf"^({_NUMBER})\s*(\S+)$")
_DATETIME_RE = re.compile(
    r"^(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[T ](\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.\d+)?)?)?"
    r"(Z|[+-]\d{2}:?\d{2})?$"
)
# Characters other programs use to start comment lines. XDI only allows '#';
# '+', '-' and '.' are left out because numbers can start with them.
_FOREIGN_COMMENT_CHARS = frozenset(string.punctuation) - set("#+-.")

_ANGSTROM_UNITS = {"a", "å", "ang", "angstrom", "angstroms", "\u212b"}
_QUANTITY_UNITS = {
    ("sample", "temperature"): ("K", "C", "F", "°C", "°F"),
    ("facility", "energy"): ("GeV", "MeV"),
    ("facility", "current"): ("mA", "A"),
}
_RECOMMENDED = (("facility", "name"), ("beamline", "name"), ("mono", "d_spacing"))
_DATETIME_FIELDS = (("scan", "start_time"), ("scan", "end_time"))


class ColumnNotFoundError(FileFormatError, KeyError):
    """A column looked up by a label the file does not have.

    It is both an :class:`~xafsflow.errors.InputError` (so the CLI reports it
    in one line) and a :class:`KeyError` (so mapping-style code can catch it).
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return self._format()


@dataclass
class XDIFile:
    """Contents of one XDI file.

    Attributes
    ----------
    path : str
        File the data were read from.
    version : str
        XDI version from the first line, e.g. ``"1.0"``.
    extra_version : str
        Anything after the XDI version on the first line (e.g.
        ``"GSE/1.0"``), or ``""``.
    fields : dict of str to dict of str to str
        Header fields as ``fields[family][key] = value``; family and key are
        lower-cased (XDI names are case-insensitive), values are stripped.
        ``Column.N`` fields are kept here too, under ``"column"``.
    column_labels : list of str
        One lower-cased name per data column, from the ``Column.N`` fields;
        ``"colN"`` (1-based) for a column that has none.
    column_units : list of str
        Units given after the name in ``Column.N: name units``, or ``""``.
    comments : str
        User comment lines (between ``# ///`` and ``#----``), joined by
        newlines, or ``""``.
    data : numpy.ndarray
        float64 array of shape ``(npts, ncolumns)``.
    warnings : list of str
        Every non-fatal problem found, each naming the line it concerns.
    """

    path: str
    version: str
    extra_version: str
    fields: dict[str, dict[str, str]]
    column_labels: list[str]
    column_units: list[str]
    comments: str
    data: np.ndarray
    warnings: list[str] = field(default_factory=list)
    # (family, key) -> 1-based line of the header field; used in messages.
    _field_lines: dict[tuple[str, str], int] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def column(self, name: str) -> np.ndarray:
        """Return one data column by label.

        Parameters
        ----------
        name : str
            Column label, matched case-insensitively (e.g. ``"Energy"``).

        Returns
        -------
        numpy.ndarray
            1-D float64 view of that column.

        Raises
        ------
        ColumnNotFoundError
            If no column has that label; the message lists the labels.
        """
        wanted = str(name).strip().lower()
        try:
            index = self.column_labels.index(wanted)
        except ValueError:
            raise ColumnNotFoundError(
                f"no column named {name!r}; the file's columns are "
                f"{', '.join(self.column_labels)}",
                self.path,
            ) from None
        return self.data[:, index]

    @property
    def element(self) -> str | None:
        """Absorbing element symbol (e.g. ``"Cu"``), or None if missing or invalid."""
        value = self.fields.get("element", {}).get("symbol")
        return None if value is None else _SYMBOL_LOOKUP.get(value.lower())

    @property
    def edge(self) -> str | None:
        """Absorption edge (e.g. ``"K"``, ``"L3"``), or None if missing or invalid."""
        value = self.fields.get("element", {}).get("edge")
        if value is None or value.upper() not in EDGE_NAMES:
            return None
        return value.upper()

    def metadata(self) -> dict:
        """Return the header as a JSON-serialisable dictionary.

        Returns
        -------
        dict
            Keys ``version``, ``extra_version``, ``fields``,
            ``column_labels``, ``column_units`` and ``comments``; the values
            are copies, so changing them does not change this object.
        """
        return {
            "version": self.version,
            "extra_version": self.extra_version,
            "fields": copy.deepcopy(self.fields),
            "column_labels": list(self.column_labels),
            "column_units": list(self.column_units),
            "comments": self.comments,
        }


# --------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------


def read_xdi(path: str | os.PathLike) -> XDIFile:
    """Read an XDI 1.0 file.

    Parameters
    ----------
    path : str or os.PathLike
        File to read. UTF-8 (or ASCII) text; ``\\n``, ``\\r\\n`` or ``\\r``
        line endings.

    Returns
    -------
    XDIFile
        Header, comments, column labels and data; non-fatal problems are in
        :attr:`XDIFile.warnings`.

    Raises
    ------
    FileFormatError
        If the file is not valid XDI: not UTF-8 text, no ``# XDI/1.x`` first
        line, a header line that is not ``Family.Key: value``, no data rows,
        rows with differing numbers of values, or a value in the data table
        that is not a finite number. The message names the file and line.
    InputError
        If the file cannot be opened.
    """
    spath = os.fspath(path)
    lines = _read_lines(spath)
    warnings: list[str] = []

    version, extra_version = _parse_version_line(lines, spath, warnings)

    data_start = _find_data_start(lines)
    if data_start is None:
        # Report a malformed header first, then the missing data.
        _parse_header(lines, len(lines), spath, [])
        last = max((i + 1 for i, s in enumerate(lines) if s.strip()), default=1)
        raise FileFormatError(
            f"the file has a header but no data rows (the file ends at line {last})",
            spath,
            last,
        )

    header = _parse_header(lines, data_start, spath, warnings)
    data = _parse_data(lines, data_start, spath, warnings)
    ncols = data.shape[1]
    if header.label_line_in_fields and len(header.label_line[1]) != ncols:
        # Not a label line after all: report it as the broken field it is.
        lineno = header.label_line[0]
        _parse_field(lines[lineno - 1].strip()[1:].strip(), lineno, spath)

    labels, units = _resolve_columns(header, ncols, data_start, warnings)
    comments_list = header.comments
    if header.separator_line is None:
        # Without '#----' the label line (if any) is the last comment line.
        comments_list = _take_label_line_from_comments(header, ncols)
        warnings.append(
            f"line {data_start + 1}: no '#----' line marks the end of the header "
            "before the data starting here"
        )
    _check_label_line(header, labels, ncols, warnings)

    comments = "\n".join(text for _, text in comments_list).strip("\n")

    xdi = XDIFile(
        path=spath,
        version=version,
        extra_version=extra_version,
        fields=header.fields,
        column_labels=labels,
        column_units=units,
        comments=comments,
        data=data,
        warnings=warnings,
    )
    xdi._field_lines = header.field_lines
    _validate_metadata(xdi, header, data_start, warnings)
    return xdi


def _read_lines(path: str) -> list[str]:
    """Return the file's lines with line endings removed."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except IsADirectoryError:
        raise InputError("is a directory, not an XDI file", path) from None
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", path) from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise FileFormatError(
            f"not a UTF-8 text file: byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start} cannot be decoded (XDI files are ASCII/UTF-8 text; "
            "is this a binary file or another encoding?)",
            path,
            line,
        ) from None
    nul = text.find("\x00")
    if nul >= 0:
        raise FileFormatError(
            "contains a NUL byte; XDI files are text, this looks like a binary file",
            path,
            text.count("\n", 0, nul) + 1,
        )
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _parse_version_line(lines: list[str], path: str, warnings: list[str]) -> tuple[str, str]:
    first = lines[0].strip() if lines else ""
    match = _VERSION_RE.match(first)
    if not match:
        shown = first if len(first) <= 60 else first[:57] + "..."
        raise FileFormatError(
            "missing XDI version line: the first line must be '# XDI/1.0' "
            f"(optionally followed by extra versions), found {shown!r}",
            path,
            1,
        )
    version, extra = match.group(1), match.group(2).strip()
    vmatch = re.fullmatch(r"(\d+)\.(\d+)", version)
    if not vmatch:
        raise FileFormatError(
            f"invalid XDI version {version!r} on the version line; expected '# XDI/1.0'",
            path,
            1,
        )
    if int(vmatch.group(1)) != 1:
        raise FileFormatError(
            f"unsupported XDI version {version}; this reader handles XDI 1.x", path, 1
        )
    if version != "1.0":
        warnings.append(f"line 1: XDI version {version} read as XDI 1.0")
    return version, extra


def _find_data_start(lines: list[str]) -> int | None:
    """Index of the first data line: not blank, not '#', not a foreign comment."""
    for i in range(1, len(lines)):
        s = lines[i].strip()
        if not s or s[0] == "#" or s[0] in _FOREIGN_COMMENT_CHARS:
            continue
        return i
    return None


@dataclass
class _Header:
    fields: dict[str, dict[str, str]] = field(default_factory=dict)
    field_lines: dict[tuple[str, str], int] = field(default_factory=dict)
    comments: list[tuple[int, str]] = field(default_factory=list)
    comment_marker_line: int | None = None
    separator_line: int | None = None
    # (line number, lower-cased labels) of the column-label line, if any
    label_line: tuple[int, list[str]] | None = None
    # the label line was a ':'-less line at the end of the fields (no '#----')
    label_line_in_fields: bool = False


def _parse_header(lines: list[str], data_start: int, path: str, warnings: list[str]) -> _Header:
    header = _Header()
    state = "fields"  # -> "comments" after '# ///', -> "labels" after '#----'
    # Last non-empty '#' line before the data: without a separator, a line
    # there with no ':' is the column-label line rather than a broken field.
    last_hash = None
    for i in range(1, data_start):
        s = lines[i].strip()
        if s.startswith("#") and s[1:].strip():
            last_hash = i

    for i in range(1, data_start):
        lineno = i + 1
        s = lines[i].strip()
        if not s:
            warnings.append(f"line {lineno}: blank line in the header ignored")
        elif s[0] != "#":
            warnings.append(
                f"line {lineno}: unsupported comment character {s[0]!r} "
                "(XDI header lines start with '#'); line ignored"
            )
        elif _SEPARATOR_RE.match(s):
            state = _header_separator(header, state, lineno, warnings)
        elif state == "labels":
            _header_label_line(header, s[1:].strip(), lineno, warnings)
        elif state == "comments":
            header.comments.append((lineno, s[1:].strip()))
        else:
            state = _header_field_line(header, s[1:].strip(), lineno, i == last_hash, path, warnings)
    return header


def _header_separator(header: _Header, state: str, lineno: int, warnings: list[str]) -> str:
    """A '#----' line: the end of the header's fields and comments; return the next state."""
    if state == "labels":
        warnings.append(
            f"line {lineno}: second '#----' line (first at line "
            f"{header.separator_line}) ignored"
        )
    else:
        state = "labels"
        header.separator_line = lineno
    return state


def _header_label_line(header: _Header, body: str, lineno: int, warnings: list[str]) -> None:
    """A line after '#----': the column-label line, or an extra comment line that is ignored."""
    if header.label_line is None:
        header.label_line = (lineno, body.lower().split())
    else:
        warnings.append(
            f"line {lineno}: comment line after the column-label line "
            f"(line {header.label_line[0]}) ignored"
        )


def _header_field_line(
    header: _Header, body: str, lineno: int, last_hash: bool, path: str, warnings: list[str]
) -> str:
    """A line in the fields part: a field, '# ///' or (as the last '#' line, without ':')
    the column-label line; return the next state."""
    if not body:
        return "fields"
    if body.startswith("///"):
        header.comment_marker_line = lineno
        return "comments"
    if ":" not in body and last_hash:
        # Checked against the number of data columns in read_xdi.
        header.label_line = (lineno, body.lower().split())
        header.label_line_in_fields = True
        return "fields"
    family, key, value = _parse_field(body, lineno, path)
    previous = header.field_lines.get((family, key))
    if previous is not None:
        warnings.append(
            f"line {lineno}: duplicate header field {family}.{key} (first at "
            f"line {previous}); the later value is used"
        )
    header.fields.setdefault(family, {})[key] = value
    header.field_lines[(family, key)] = lineno
    return "fields"


def _parse_field(body: str, lineno: int, path: str) -> tuple[str, str, str]:
    """Split ``Family.Key: value`` on the first ':' and check the name."""
    shown = f"# {body}"

    def fail(reason: str) -> FileFormatError:
        return FileFormatError(
            f"malformed header field {shown!r}: {reason}; header lines must read "
            "'# Family.Key: value'",
            path,
            lineno,
        )

    name, colon, value = body.partition(":")
    if not colon:
        raise fail("no ':' between the field name and its value")
    name, value = name.strip(), value.strip()
    parts = name.split(".")
    if len(parts) == 1:
        if ":" in value:
            raise fail(
                f"two ':' and no '.' in the field name ({name!r} is followed by "
                "another ':'; use '.' between Family and Key)"
            )
        raise fail(f"field name {name!r} has no '.' between Family and Key")
    if len(parts) > 2:
        raise fail(f"field name {name!r} has more than one '.'")
    family, key = parts
    if not family or not key:
        raise fail(f"field name {name!r} has an empty Family or Key")
    if family[0].isdigit():
        raise fail(f"Family {family!r} starts with a digit")
    if not _FAMILY_RE.match(family) or not _KEY_RE.match(key):
        raise fail(
            f"field name {name!r} contains characters other than letters, digits and '_'"
        )
    if not value:
        raise fail("no value after ':'")
    return family.lower(), key.lower(), value


def _parse_data(
    lines: list[str], data_start: int, path: str, warnings: list[str]
) -> np.ndarray:
    rows: list[list[float]] = []
    ncols = 0
    first_line = data_start + 1
    for i in range(data_start, len(lines)):
        lineno = i + 1
        s = lines[i].strip()
        if not s:
            continue
        if s[0] == "#":
            warnings.append(f"line {lineno}: comment line inside the data table ignored")
            continue
        tokens = s.split()
        if not rows:
            ncols = len(tokens)
            first_line = lineno
        elif len(tokens) != ncols:
            raise FileFormatError(
                f"inconsistent number of columns in the data table: this row has "
                f"{len(tokens)} values but the first data row (line {first_line}) "
                f"has {ncols}",
                path,
                lineno,
            )
        if _ROW_RE.match(s):
            values = list(map(float, tokens))
            if not all(map(math.isfinite, values)):
                values = [_parse_value(tok, col, path, lineno) for col, tok in enumerate(tokens, 1)]
        else:
            values = [_parse_value(tok, col, path, lineno) for col, tok in enumerate(tokens, 1)]
        rows.append(values)
    return np.array(rows, dtype=np.float64).reshape(len(rows), ncols)


def _parse_value(token: str, col: int, path: str, lineno: int) -> float:
    if _NUMBER_RE.match(token):
        value = float(token)
        if np.isfinite(value):
            return value
        raise FileFormatError(
            f"value {token!r} in column {col} of the data table overflows float64",
            path,
            lineno,
        )
    if _NAN_RE.match(token):
        reason = f"NaN ({token!r}) in column {col} of the data table; data must be finite numbers"
    elif _INF_RE.match(token):
        reason = f"infinite value ({token!r}) in column {col} of the data table; data must be finite numbers"
    else:
        reason = f"{token!r} in column {col} of the data table is not a number"
    raise FileFormatError(reason, path, lineno)


# --------------------------------------------------------------------------
# columns
# --------------------------------------------------------------------------


def _resolve_columns(
    header: _Header, ncols: int, data_start: int, warnings: list[str]
) -> tuple[list[str], list[str]]:
    """Labels and units from the ``Column.N`` fields; ``colN`` where unspecified."""
    labels = [f"col{i}" for i in range(1, ncols + 1)]
    units = [""] * ncols
    given: dict[int, int] = {}  # column index -> header line
    for key, value in header.fields.get("column", {}).items():
        lineno = header.field_lines[("column", key)]
        if not key.isdigit() or int(key) < 1:
            warnings.append(
                f"line {lineno}: 'Column.{key}' is not a positive column number; ignored"
            )
            continue
        index = int(key)
        given[index] = lineno
        if index > ncols:
            warnings.append(
                f"line {lineno}: Column.{index} label ignored: the data table has "
                f"only {ncols} columns"
            )
            continue
        name, *unit = value.split(None, 1)
        labels[index - 1] = name.lower()
        units[index - 1] = unit[0].strip() if unit else ""

    if not given:
        warnings.append(
            f"line {data_start + 1}: no Column.N fields in the header; column labels "
            f"set to {', '.join(labels)}"
        )
    else:
        indices = sorted(given)
        if indices != list(range(1, len(indices) + 1)):
            warnings.append(
                f"line {given[indices[-1]]}: Column indices are not continuous: found "
                f"{', '.join(map(str, indices))}, expected 1 to {len(indices)}"
            )
        missing = [i for i in range(1, ncols + 1) if i not in given]
        if missing:
            warnings.append(
                f"line {data_start + 1}: the data table has {ncols} columns but there "
                f"is no Column.N label for column(s) {', '.join(map(str, missing))}; "
                f"set to {', '.join(labels[i - 1] for i in missing)}"
            )
    seen: dict[str, int] = {}
    for i, label in enumerate(labels, 1):
        if label in seen:
            warnings.append(
                f"line {given.get(i, data_start + 1)}: column {i} has the same label "
                f"{label!r} as column {seen[label]}; column({label!r}) returns column "
                f"{seen[label]}"
            )
        else:
            seen[label] = i
    return labels, units


def _take_label_line_from_comments(header: _Header, ncols: int) -> list[tuple[int, str]]:
    """Without a separator, use the last comment line as labels if it fits."""
    comments = list(header.comments)
    while comments and not comments[-1][1]:
        comments.pop()
    if header.label_line is None and comments:
        lineno, text = comments[-1]
        if len(text.split()) == ncols:
            header.label_line = (lineno, text.lower().split())
            comments.pop()
    return comments


def _check_label_line(header: _Header, labels: list[str], ncols: int, warnings: list[str]) -> None:
    """Compare the column-label line with the labels from ``Column.N``."""
    if header.label_line is None:
        if header.separator_line is not None:
            warnings.append(
                f"line {header.separator_line + 1}: no column-label line after the "
                f"'#----' line (line {header.separator_line})"
            )
        return
    lineno, words = header.label_line
    if words and "column" not in header.fields:
        warnings.append(
            f"line {lineno}: the column-label line reads {' '.join(words)!r}, but "
            "XDI column labels come from '# Column.N: name units' fields, which are "
            "missing"
        )
        return
    if not words:
        warnings.append(f"line {lineno}: the column-label line is empty")
        return
    if len(words) != ncols:
        warnings.append(
            f"line {lineno}: the column-label line has {len(words)} labels but the "
            f"data table has {ncols} columns"
        )
        return
    differ = []
    for i, (word, label) in enumerate(zip(words, labels), 1):
        if word == label:
            continue
        if label == f"col{i}" and str(i) not in header.fields.get("column", {}):
            differ.append(f"column {i} is {word!r} there but has no Column.{i} field")
        else:
            differ.append(f"column {i} is {word!r} there but {label!r} in Column.{i}")
    if differ:
        warnings.append(
            f"line {lineno}: the column-label line does not match the Column.N fields "
            f"({'; '.join(differ)}); the Column.N labels are used"
        )


# --------------------------------------------------------------------------
# metadata checks (warnings only)
# --------------------------------------------------------------------------


def _validate_metadata(xdi: XDIFile, header: _Header, data_start: int, warnings: list[str]) -> None:
    header_span = f"the header (lines 2-{data_start})"
    _check_element(xdi.fields, header.field_lines, header_span, warnings)
    d_spacing = _check_field_values(xdi.fields, header.field_lines, warnings)
    _check_recommended(xdi, header.field_lines, header_span, data_start, d_spacing, warnings)


def _check_element(
    fields: dict[str, dict[str, str]], lines: dict[tuple[str, str], int], header_span: str, warnings: list[str]
) -> None:
    """Required: Element.symbol and Element.edge, each present and valid."""
    symbol = fields.get("element", {}).get("symbol")
    if symbol is None:
        warnings.append(f"missing required field Element.symbol in {header_span}")
    elif symbol.lower() not in _SYMBOL_LOOKUP:
        warnings.append(
            f"line {lines[('element', 'symbol')]}: invalid Element.symbol {symbol!r}: "
            "not a chemical element symbol (Z = 1-118)"
        )
    edge = fields.get("element", {}).get("edge")
    if edge is None:
        warnings.append(f"missing required field Element.edge in {header_span}")
    elif edge.upper() not in EDGE_NAMES:
        warnings.append(
            f"line {lines[('element', 'edge')]}: invalid Element.edge {edge!r}: expected "
            "one of K, L, L1-L3, M, M1-M5, N, N1-N7, O, O1-O7, P, P1-P3"
        )


def _check_field_values(
    fields: dict[str, dict[str, str]], lines: dict[tuple[str, str], int], warnings: list[str]
) -> float | None:
    """Mono.d_spacing, date-times and quantities with units; return the d-spacing (None if unusable)."""

    def value_of(family: str, key: str) -> str | None:
        return fields.get(family, {}).get(key)

    # Mono.d_spacing must be a positive number (in Angstrom).
    d_text = value_of("mono", "d_spacing")
    d_spacing = _parse_d_spacing(d_text)
    if d_text is not None and d_spacing is None:
        warnings.append(
            f"line {lines[('mono', 'd_spacing')]}: invalid Mono.d_spacing {d_text!r}: "
            "expected a positive number (in Angstrom)"
        )

    # Date-times.
    for family, key in _DATETIME_FIELDS:
        text = value_of(family, key)
        if text is not None:
            problem = _datetime_problem(text)
            if problem:
                warnings.append(
                    f"line {lines[(family, key)]}: invalid {family.capitalize()}.{key} "
                    f"{text!r}: {problem}"
                )

    # Quantities with units.
    for (family, key), allowed in _QUANTITY_UNITS.items():
        text = value_of(family, key)
        if text is None:
            continue
        match = _QUANTITY_RE.match(text)
        if not match or match.group(2) not in allowed:
            warnings.append(
                f"line {lines[(family, key)]}: invalid {family.capitalize()}.{key} "
                f"{text!r}: expected 'number unit' with unit one of {', '.join(allowed)}"
            )
    return d_spacing


def _check_recommended(
    xdi: XDIFile, lines: dict[tuple[str, str], int], header_span: str, data_start: int,
    d_spacing: float | None, warnings: list[str],
) -> None:
    """Recommended fields, an energy or angle first column, and an angle column's d-spacing."""
    for family, key in _RECOMMENDED:
        if xdi.fields.get(family, {}).get(key) is None:
            warnings.append(
                f"missing recommended field {family.capitalize()}.{key} in {header_span}"
            )
    first = xdi.column_labels[0]
    if first not in ("energy", "angle"):
        where = lines.get(("column", "1"), data_start + 1)
        warnings.append(
            f"line {where}: the first column is {first!r}; XDI recommends Column.1 to be "
            "'energy' or 'angle'"
        )

    if "angle" in xdi.column_labels and "energy" not in xdi.column_labels and d_spacing is None:
        index = xdi.column_labels.index("angle") + 1
        where = lines.get(("column", str(index)))
        prefix = f"line {where}: " if where else ""
        warnings.append(
            f"{prefix}column {index} is 'angle' but there is no valid Mono.d_spacing, "
            "so the energy cannot be computed"
        )


def _parse_d_spacing(text: str | None) -> float | None:
    """Mono.d_spacing in Angstrom, or None if missing, non-numeric or not positive."""
    if text is None:
        return None
    parts = text.split()
    if not parts or len(parts) > 2 or not _NUMBER_RE.match(parts[0]):
        return None
    if len(parts) == 2 and parts[1].lower() not in _ANGSTROM_UNITS:
        return None
    value = float(parts[0])
    return value if np.isfinite(value) and value > 0 else None


def _datetime_problem(text: str) -> str | None:
    """Why ``text`` is not an ISO 8601 date-time, or None if it is one."""
    match = _DATETIME_RE.match(text)
    if not match:
        return "not an ISO 8601 date-time such as 2001-06-26T22:27:31"
    year, month, day = (int(match.group(k)) for k in (1, 2, 3))
    if not 1 <= month <= 12:
        return f"month {month} is not in the range 1-12"
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = [31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
    if not 1 <= day <= days:
        return f"day {day} is not in the range 1-{days} for month {month}"
    if match.group(4) is not None:
        hour, minute = int(match.group(4)), int(match.group(5))
        second = int(match.group(6)) if match.group(6) else 0
        if hour > 23:
            return f"hour {hour} is not in the range 0-23"
        if minute > 59:
            return f"minute {minute} is not in the range 0-59"
        if second > 60:
            return f"second {second} is not in the range 0-60"
    if any(match.group(k) is not None and len(match.group(k)) != 2 for k in (2, 3, 4, 5, 6)):
        return "ISO 8601 needs two-digit month, day, hour, minute and second"
    return None


# --------------------------------------------------------------------------
# energy axis
# --------------------------------------------------------------------------


def energy_axis(xdi: XDIFile) -> tuple[np.ndarray, list[str]]:
    """Return the file's energy axis in eV.

    The axis is the column labelled ``energy`` (units eV, or keV which is
    converted), or else the column labelled ``angle`` converted from the
    Bragg angle with ``Mono.d_spacing`` (Angstrom) as
    ``E = hc / (2 d sin(theta))``, ``hc`` = :data:`HC_EV_ANGSTROM`. The angle
    is in degrees unless its units are ``rad`` or ``radians``.

    Parameters
    ----------
    xdi : XDIFile
        A file returned by :func:`read_xdi`.

    Returns
    -------
    energy : numpy.ndarray
        float64 energies in eV, one per data row, in file order.
    warnings : list of str
        Non-fatal problems (units assumed, non-monotonic axis, ...).

    Raises
    ------
    AnalysisInputError
        If the file has neither an ``energy`` column with known units nor an
        ``angle`` column with a valid ``Mono.d_spacing``, or the axis has
        non-positive values or angles outside (0, 90) degrees. The message
        lists the file's columns.
    """
    warnings: list[str] = []
    labels = xdi.column_labels
    if "energy" in labels:
        energy = _energy_from_energy_column(xdi, labels.index("energy"), warnings)
    elif "angle" in labels:
        energy = _energy_from_angle_column(xdi, labels.index("angle"), warnings)
    else:
        raise _no_energy_axis(xdi, "there is no column named 'energy' or 'angle'")

    if np.any(energy <= 0):
        raise _no_energy_axis(xdi, "the energy axis has zero or negative values")
    steps = np.diff(energy)
    if steps.size and not (np.all(steps > 0) or np.all(steps < 0)):
        warnings.append(f"{xdi.path}: the energy axis is not monotonic")
    return np.asarray(energy, dtype=np.float64), warnings


def _no_energy_axis(xdi: XDIFile, reason: str) -> AnalysisInputError:
    """The error for a file without a usable energy axis; the message lists its columns."""
    described = ", ".join(
        f"{lab} ({unit})" if unit else lab for lab, unit in zip(xdi.column_labels, xdi.column_units)
    )
    return AnalysisInputError(
        f"no usable energy axis: {reason}; the file's columns are {described}",
        xdi.path,
    )


def _energy_from_energy_column(xdi: XDIFile, index: int, warnings: list[str]) -> np.ndarray:
    """The ``energy`` column in eV (eV, keV, or no units: eV assumed with a warning)."""
    unit = xdi.column_units[index].strip()
    if unit.lower() == "ev":
        scale = 1.0
    elif unit.lower() == "kev":
        scale = 1000.0
    elif not unit:
        scale = 1.0
        warnings.append(f"{xdi.path}: column {index + 1} 'energy' has no units; eV assumed")
    else:
        raise _no_energy_axis(xdi, f"the energy column has units {unit!r}, expected eV or keV")
    return xdi.data[:, index] * scale


def _energy_from_angle_column(xdi: XDIFile, index: int, warnings: list[str]) -> np.ndarray:
    """Energies in eV from the ``angle`` column (degrees unless rad) and ``Mono.d_spacing``."""
    d_text = xdi.fields.get("mono", {}).get("d_spacing")
    d_spacing = _parse_d_spacing(d_text)
    if d_spacing is None:
        if d_text is None:
            raise _no_energy_axis(
                xdi, "column 'angle' needs Mono.d_spacing to convert to energy, and the header has none")
        raise _no_energy_axis(xdi, f"column 'angle' needs a valid Mono.d_spacing, but it is {d_text!r}")
    unit = xdi.column_units[index].strip().lower()
    angle = xdi.data[:, index]
    if unit in ("rad", "rads", "radian", "radians"):
        theta = angle
    elif unit in ("deg", "degs", "degree", "degrees", "°", ""):
        if not unit:
            warnings.append(
                f"{xdi.path}: column {index + 1} 'angle' has no units; degrees assumed"
            )
        theta = np.radians(angle)
    else:
        raise _no_energy_axis(xdi, f"the angle column has units {unit!r}, expected degrees or radians")
    if np.any(theta <= 0) or np.any(theta >= np.pi / 2):
        raise _no_energy_axis(xdi, "Bragg angles must lie strictly between 0 and 90 degrees")
    return HC_EV_ANGSTROM / (2.0 * d_spacing * np.sin(theta))
