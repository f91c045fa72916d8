"""Tests for the XDI 1.0 reader, on the shared XDI example and bad files.

Expected numbers are always read from the data files themselves (with
``np.loadtxt`` or plain text processing), and the expected outcome of every
bad file is taken from ``bad/BadFiles.txt``.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from xafsflow.errors import AnalysisInputError, FileFormatError, InputError
from xafsflow.io.xdi import (
    EDGE_NAMES,
    ELEMENT_SYMBOLS,
    HC_EV_ANGSTROM,
    ColumnNotFoundError,
    XDIFile,
    energy_axis,
    read_xdi,
)

DATA = Path("/work/shared/data/xdi")
BAD = DATA / "bad"

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} not available")


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _numeric_rows(path: Path) -> np.ndarray:
    """Data table read independently: every line not starting with '#' or '!'."""
    return np.loadtxt(path, comments=("#", "!"), ndmin=2)


def _header_fields(path: Path) -> dict[str, str]:
    """'# Family.Key: value' lines, read independently with a regex."""
    out = {}
    for line in _lines(path):
        m = re.match(r"#\s*([A-Za-z_]\w*)\.(\w+):(.*)$", line)
        if m:
            out[f"{m.group(1)}.{m.group(2)}".lower()] = m.group(3).strip()
    return out


def _bad_file_table() -> list[tuple[str, str, str | None, str]]:
    """(file, status, note, description) rows from BadFiles.txt."""
    rows = []
    if not (BAD / "BadFiles.txt").is_file():
        return rows
    for line in (BAD / "BadFiles.txt").read_text().splitlines():
        m = re.match(
            r"^(bad_\d+\.xdi)\s+(error msg|file read)(?:\((\d+)\))?\s+\S+\s+(.*)$", line
        )
        if m:
            rows.append((m.group(1), m.group(2), m.group(3), m.group(4).strip()))
    return rows


BAD_TABLE = _bad_file_table()
ERROR_FILES = [r for r in BAD_TABLE if r[1] == "error msg"]
READ_FILES = [r for r in BAD_TABLE if r[1] == "file read"]


def _changed_lines(name: str) -> set[int]:
    """1-based lines of ``name`` that differ from (or are missing in) bad_00.xdi."""
    ref, bad = _lines(BAD / "bad_00.xdi"), _lines(BAD / name)
    changed = set()
    matcher = difflib.SequenceMatcher(a=ref, b=bad, autojunk=False)
    for tag, _i1, _i2, j1, j2 in matcher.get_opcodes():
        if tag in ("replace", "insert"):
            changed.update(range(j1 + 1, j2 + 1))
    return changed


def _write_variant(tmp_path: Path, source: Path, edit, name: str = "variant.xdi") -> Path:
    """Copy ``source`` into tmp_path with its lines passed through ``edit``."""
    out = tmp_path / name
    out.write_text("\n".join(edit(_lines(source))) + "\n")
    return out


def test_bad_file_table_parsed():
    assert len(BAD_TABLE) == 36
    assert {r[0] for r in BAD_TABLE} == {f"bad_{i:02d}.xdi" for i in range(36)}
    assert ERROR_FILES and READ_FILES


# --------------------------------------------------------------------------
# good files
# --------------------------------------------------------------------------

GOOD_FILES = sorted(p.name for p in DATA.glob("*.xdi"))


@pytest.mark.parametrize("name", GOOD_FILES)
def test_good_file_reads_all_data_and_metadata(name):
    path = DATA / name
    xdi = read_xdi(path)
    expected = _numeric_rows(path)
    assert isinstance(xdi, XDIFile)
    assert xdi.path == str(path)
    assert xdi.version == "1.0"
    assert xdi.data.dtype == np.float64
    assert xdi.data.shape == expected.shape
    np.testing.assert_array_equal(xdi.data, expected)
    assert len(xdi.column_labels) == len(xdi.column_units) == expected.shape[1]

    fields = _header_fields(path)
    assert {f"{fam}.{key}" for fam, keys in xdi.fields.items() for key in keys} == set(fields)
    for dotted, value in fields.items():
        fam, key = dotted.split(".")
        assert xdi.fields[fam][key] == value
    for dotted, value in fields.items():
        if dotted.startswith("column."):
            index = int(dotted.split(".")[1]) - 1
            assert xdi.column_labels[index] == value.split()[0].lower()
            assert xdi.column_units[index] == " ".join(value.split()[1:])

    first = _lines(path)[0]
    assert xdi.extra_version == first.split("XDI/1.0", 1)[1].strip()

    meta = xdi.metadata()
    assert json.loads(json.dumps(meta)) == meta
    assert set(meta) == {
        "version", "extra_version", "fields", "column_labels", "column_units", "comments"
    }
    meta["fields"].clear()
    assert xdi.fields, "metadata() must return a copy"
    for warning in xdi.warnings:
        assert "line" in warning


@pytest.mark.parametrize("name", [n for n in GOOD_FILES if n != "nonxafs_1d.xdi"])
def test_good_absorption_files(name):
    path = DATA / name
    xdi = read_xdi(path)
    fields = _header_fields(path)
    assert xdi.element == fields["element.symbol"]
    assert xdi.edge == fields["element.edge"]
    energy, warnings = energy_axis(xdi)
    np.testing.assert_array_equal(energy, _numeric_rows(path)[:, 0])
    assert warnings == []
    # Only missing recommended fields may be reported for these files.
    for warning in xdi.warnings:
        assert "recommended" in warning


def test_cu_metal_rt_details():
    path = DATA / "cu_metal_rt.xdi"
    xdi = read_xdi(path)
    assert xdi.column_labels == ["energy", "i0", "itrans", "mutrans"]
    assert xdi.column_units == ["eV", "", "", ""]
    assert xdi.extra_version == "GSE/1.0"
    assert xdi.element == "Cu"
    assert xdi.edge == "K"
    assert xdi.fields["element"]["symbol"] == "Cu"
    assert xdi.fields["mono"]["d_spacing"] == "3.13553"
    assert xdi.fields["scan"]["start_time"] == "2001-06-26T22:27:31"
    assert xdi.fields["gse"]["extra"] == "config 1"
    assert "Cu foil Room Temperature" in xdi.comments
    assert xdi.comments.splitlines() == [
        line.lstrip("#").strip()
        for line in _lines(path)[
            _lines(path).index("# ///") + 1 : _lines(path).index("#----")
        ]
    ]
    rows = [ln for ln in _lines(path) if ln.strip() and not ln.lstrip().startswith("#")]
    assert xdi.data.shape == (len(rows), 4)
    assert xdi.data[0, 0] == float(rows[0].split()[0]) == 8779.0
    np.testing.assert_array_equal(xdi.column("MuTrans"), _numeric_rows(path)[:, 3])
    assert xdi.warnings == []


def test_column_lookup_error_lists_labels():
    xdi = read_xdi(DATA / "cu_metal_rt.xdi")
    with pytest.raises(ColumnNotFoundError) as info:
        xdi.column("ifluor")
    err = info.value
    assert isinstance(err, InputError) and isinstance(err, KeyError)
    assert isinstance(err, FileFormatError)
    for label in ("energy", "i0", "itrans", "mutrans", "ifluor", "cu_metal_rt.xdi"):
        assert label in str(err)


def test_nonxafs_file_reads_but_has_no_energy_axis():
    path = DATA / "nonxafs_1d.xdi"
    xdi = read_xdi(path)
    assert xdi.column_labels[0] == "x"
    assert xdi.column_units[0] == "mm"
    assert xdi.element is None and xdi.edge is None
    np.testing.assert_array_equal(xdi.data, _numeric_rows(path))
    assert any("Element.symbol" in w for w in xdi.warnings)
    with pytest.raises(AnalysisInputError) as info:
        energy_axis(xdi)
    message = str(info.value)
    assert "nonxafs_1d.xdi" in message
    assert "x (mm)" in message and "energy" in message


# --------------------------------------------------------------------------
# bad files, as listed in BadFiles.txt
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name,status,note,description", ERROR_FILES, ids=[r[0] for r in ERROR_FILES])
def test_bad_file_raises(name, status, note, description):
    path = BAD / name
    with pytest.raises(FileFormatError) as info:
        read_xdi(path)
    err = info.value
    message = str(err)
    assert name in message
    assert err.path == str(path)
    assert err.line is not None, "every error in these files has a line"
    assert f"line {err.line}" in message
    assert err.line in _changed_lines(name), (err.line, _changed_lines(name))
    assert len(err.reason) > 15


# Words the warning (or error) for a file must contain, judged from the
# description in BadFiles.txt and the diff against bad_00.xdi.
EXPECTED_WORDS = {
    "bad_01.xdi": ["version"],
    "bad_02.xdi": ["Element.edge"],
    "bad_03.xdi": ["Element.symbol"],
    "bad_04.xdi": ["Element.edge", "Foo", "line 6"],
    "bad_05.xdi": ["Element.symbol", "Foo", "line 7"],
    "bad_06.xdi": ["#----"],
    "bad_07.xdi": ["Column"],
    "bad_08.xdi": ["col4"],
    "bad_09.xdi": ["Column.5", "line 6"],
    "bad_10.xdi": ["not continuous"],
    "bad_11.xdi": ["comment character", "line 12"],
    "bad_12.xdi": ["angle", "d_spacing"],
    "bad_13.xdi": ["3 values", "4"],
    "bad_14.xdi": ["6 values", "4"],
    "bad_15.xdi": ["NaN"],
    "bad_16.xdi": ["STRING", "not a number"],
    "bad_17.xdi": ["1.4.9", "not a number"],
    "bad_18.xdi": ["no value"],
    "bad_19.xdi": ["no ':'"],
    "bad_20.xdi": ["two ':'"],
    "bad_21.xdi": ["no '.'"],
    "bad_22.xdi": ["more than one '.'"],
    "bad_24.xdi": ["starts with a digit"],
    "bad_28.xdi": ["Scan.start_time", "ISO 8601", "line 18"],
    "bad_29.xdi": ["Scan.start_time", "month", "line 18"],
    "bad_30.xdi": ["Element.edge", "Element.symbol", "Foo", "Bar"],
    "bad_31.xdi": ["Mono.d_spacing", "line 10"],
    "bad_32.xdi": ["Facility.name", "Beamline.name", "energie"],
    "bad_33.xdi": ["Sample.temperature", "line 23"],
    "bad_34.xdi": ["Facility.energy", "line 16"],
    "bad_35.xdi": ["Facility.current", "line 17"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED_WORDS))
def test_bad_file_messages_say_what_is_wrong(name):
    try:
        text = "\n".join(read_xdi(BAD / name).warnings)
    except FileFormatError as err:
        text = str(err)
    for word in EXPECTED_WORDS[name]:
        assert word in text, (word, text)


@pytest.mark.parametrize("name,status,note,description", READ_FILES, ids=[r[0] for r in READ_FILES])
def test_bad_file_reads(name, status, note, description):
    path = BAD / name
    xdi = read_xdi(path)
    expected = _numeric_rows(path)
    np.testing.assert_array_equal(xdi.data, expected)
    assert len(xdi.column_labels) == expected.shape[1]
    # Notes 1, 2, 3 and 7 of BadFiles.txt: the reader reports a problem.
    if note in ("1", "2", "3", "7"):
        assert xdi.warnings, description
    # Notes 4, 5, 6 (and the reference file): valid XDI, nothing to report.
    if note in (None, "4", "5", "6"):
        assert xdi.warnings == [], xdi.warnings
    for warning in xdi.warnings:
        assert re.search(r"\blines? \d+", warning), warning
    json.dumps(xdi.metadata())


def _reference_labels() -> list[str]:
    return [
        line.split(":", 1)[1].split()[0].lower()
        for line in _lines(BAD / "bad_00.xdi")
        if line.startswith("# Column.")
    ]


def test_bad_06_no_separator_keeps_labels_and_comments():
    xdi = read_xdi(BAD / "bad_06.xdi")
    assert xdi.column_labels == _reference_labels()
    assert xdi.comments == read_xdi(BAD / "bad_00.xdi").comments
    assert "energy i0" not in xdi.comments


def test_column_label_notes():
    """Note 2: extra labels ignored, unspecified columns named colN."""
    ref = _reference_labels()
    ncol = len(ref)
    assert read_xdi(BAD / "bad_07.xdi").column_labels == [f"col{i}" for i in range(1, ncol + 1)]
    assert read_xdi(BAD / "bad_08.xdi").column_labels == ref[:-1] + [f"col{ncol}"]
    assert read_xdi(BAD / "bad_09.xdi").column_labels == ref
    assert read_xdi(BAD / "bad_10.xdi").column_labels == ref[:-1] + [f"col{ncol}"]


def test_notes_4_5_6():
    assert read_xdi(BAD / "bad_23.xdi").fields["family"]["00key"] == "Value"
    assert read_xdi(BAD / "bad_25.xdi").extra_version == ""
    assert read_xdi(BAD / "bad_25.xdi").fields["gse"]["extra3"] == "config 3"
    assert read_xdi(BAD / "bad_26.xdi").comments == ""
    assert read_xdi(BAD / "bad_27.xdi").comments == ""


def test_invalid_element_and_edge_are_none():
    for name in ("bad_04.xdi", "bad_30.xdi"):
        assert read_xdi(BAD / name).edge is None
    for name in ("bad_05.xdi", "bad_30.xdi"):
        assert read_xdi(BAD / name).element is None
    assert read_xdi(BAD / "bad_04.xdi").element == "Cu"


def test_bad_11_foreign_comment_lines_dropped():
    xdi = read_xdi(BAD / "bad_11.xdi")
    assert "collimation" not in xdi.fields["beamline"]
    assert "focusing" not in xdi.fields["beamline"]
    assert xdi.fields["beamline"]["name"] == "13ID"


def test_angle_without_d_spacing():
    xdi = read_xdi(BAD / "bad_12.xdi")
    assert xdi.column_labels[0] == "angle"
    with pytest.raises(AnalysisInputError) as info:
        energy_axis(xdi)
    assert "d_spacing" in str(info.value) and "angle" in str(info.value)


def test_invalid_d_spacing_blocks_angle_conversion(tmp_path):
    def edit(lines):
        return [ln.replace("# Column.1: energy eV", "# Column.1: angle degrees") for ln in lines]

    xdi = read_xdi(_write_variant(tmp_path, BAD / "bad_31.xdi", edit))
    with pytest.raises(AnalysisInputError, match="d_spacing"):
        energy_axis(xdi)


# --------------------------------------------------------------------------
# energy axis
# --------------------------------------------------------------------------


def _angle_file(tmp_path, unit: str) -> Path:
    """bad_12.xdi with its Mono.d_spacing restored (value taken from bad_00)."""
    d_line = next(ln for ln in _lines(BAD / "bad_00.xdi") if ln.startswith("# Mono.d_spacing"))

    def edit(lines):
        out = []
        for ln in lines:
            if ln.startswith("# Mono.invalid_d_spacing_name"):
                ln = d_line
            if ln.startswith("# Column.1:"):
                ln = f"# Column.1: angle {unit}".rstrip()
            out.append(ln)
        return out

    return _write_variant(tmp_path, BAD / "bad_12.xdi", edit)


def test_energy_from_angle_degrees(tmp_path):
    path = _angle_file(tmp_path, "degrees")
    xdi = read_xdi(path)
    d = float(next(ln for ln in _lines(path) if ln.startswith("# Mono.d_spacing")).split(":")[1])
    theta = np.deg2rad(_numeric_rows(path)[:, 0])
    expected = 12398.419843320026 / (2 * d * np.sin(theta))
    energy, warnings = energy_axis(xdi)
    np.testing.assert_allclose(energy, expected, rtol=1e-14)
    assert HC_EV_ANGSTROM == 12398.419843320026
    assert warnings == []
    assert not any("d_spacing" in w for w in xdi.warnings)


def test_energy_from_angle_radians(tmp_path):
    deg = energy_axis(read_xdi(_angle_file(tmp_path, "degrees")))[0]
    path = _angle_file(tmp_path, "rad")
    text = path.read_text().splitlines()
    out = []
    for ln in text:
        if ln and not ln.startswith("#"):
            values = ln.split()
            values[0] = repr(float(np.deg2rad(float(values[0]))))
            ln = "  ".join(values)
        out.append(ln)
    path.write_text("\n".join(out) + "\n")
    rad = energy_axis(read_xdi(path))[0]
    np.testing.assert_allclose(rad, deg, rtol=1e-12)


def test_energy_without_angle_units_assumes_degrees(tmp_path):
    energy, warnings = energy_axis(read_xdi(_angle_file(tmp_path, "")))
    assert any("degrees assumed" in w for w in warnings)
    np.testing.assert_allclose(
        energy, energy_axis(read_xdi(_angle_file(tmp_path, "degrees")))[0]
    )


def test_energy_in_kev_is_converted(tmp_path):
    def edit(lines):
        out = []
        for ln in lines:
            if ln.startswith("# Column.1:"):
                ln = "# Column.1: energy keV"
            elif ln and not ln.startswith("#"):
                values = ln.split()
                values[0] = str(float(values[0]) / 1000)
                ln = "  ".join(values)
            out.append(ln)
        return out

    path = _write_variant(tmp_path, DATA / "cu_metal_rt.xdi", edit)
    energy, _ = energy_axis(read_xdi(path))
    np.testing.assert_allclose(energy, _numeric_rows(DATA / "cu_metal_rt.xdi")[:, 0], rtol=1e-12)


def test_energy_with_unknown_units_is_rejected(tmp_path):
    def edit(lines):
        return ["# Column.1: energy J" if ln.startswith("# Column.1:") else ln for ln in lines]

    with pytest.raises(AnalysisInputError, match="units"):
        energy_axis(read_xdi(_write_variant(tmp_path, DATA / "cu_metal_rt.xdi", edit)))


# --------------------------------------------------------------------------
# robustness
# --------------------------------------------------------------------------


def test_crlf_and_trailing_blank_lines(tmp_path):
    source = DATA / "cu_metal_rt.xdi"
    path = tmp_path / "crlf.xdi"
    path.write_bytes(source.read_bytes().replace(b"\n", b"\r\n") + b"\r\n\r\n   \r\n")
    crlf = read_xdi(path)
    ref = read_xdi(source)
    np.testing.assert_array_equal(crlf.data, ref.data)
    assert crlf.metadata() == ref.metadata()
    assert crlf.warnings == []


def test_header_without_data_is_an_error(tmp_path):
    lines = _lines(DATA / "cu_metal_rt.xdi")
    header = [ln for ln in lines if ln.startswith("#")]
    path = tmp_path / "nodata.xdi"
    path.write_text("\n".join(header) + "\n\n")
    with pytest.raises(FileFormatError) as info:
        read_xdi(path)
    assert "no data" in str(info.value) and "nodata.xdi" in str(info.value)
    assert info.value.line == len(header)


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.xdi"
    path.write_text("")
    with pytest.raises(FileFormatError, match="version") as info:
        read_xdi(path)
    assert info.value.line == 1


def test_non_utf8_is_an_error(tmp_path):
    lines = _lines(DATA / "cu_metal_rt.xdi")
    lines[9] = lines[9] + " \xc5"  # "Å" in Latin-1
    path = tmp_path / "latin1.xdi"
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    with pytest.raises(FileFormatError) as info:
        read_xdi(path)
    assert "UTF-8" in str(info.value) and "latin1.xdi" in str(info.value)
    assert info.value.line == 10


def test_binary_file_is_an_error(tmp_path):
    path = tmp_path / "binary.xdi"
    path.write_bytes(b"# XDI/1.0\n# Column.1: energy\n#----\n\x00\x01\x02\n")
    with pytest.raises(FileFormatError, match="binary") as info:
        read_xdi(path)
    assert info.value.line == 4


def test_missing_file_is_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_xdi(tmp_path / "absent.xdi")


def test_infinite_value_is_an_error(tmp_path):
    lines = _lines(DATA / "cu_metal_rt.xdi")
    row = next(i for i, ln in enumerate(lines) if ln.strip() and not ln.startswith("#"))

    def edit(lines):
        lines = list(lines)
        values = lines[row].split()
        values[2] = "inf"
        lines[row] = "  ".join(values)
        return lines

    with pytest.raises(FileFormatError, match="infinite") as info:
        read_xdi(_write_variant(tmp_path, DATA / "cu_metal_rt.xdi", edit))
    assert info.value.line == row + 1


def test_no_separator_and_no_comment_block(tmp_path):
    """Without '# ///' and '#----' the last header line is the label line."""

    def edit(lines):
        return [ln for ln in lines if ln not in ("# ///", "#----") and "Cu foil" not in ln
                and "measured at" not in ln]

    xdi = read_xdi(_write_variant(tmp_path, DATA / "cu_metal_rt.xdi", edit))
    assert xdi.column_labels == ["energy", "i0", "itrans", "mutrans"]
    assert any("#----" in w for w in xdi.warnings)


def test_broken_last_field_without_separator_is_still_an_error(tmp_path):
    def edit(lines):
        out = [ln for ln in lines if ln not in ("# ///", "#----") and "Cu foil" not in ln
               and "measured at" not in ln and not ln.startswith("# energy")]
        index = max(i for i, ln in enumerate(out) if ln.startswith("#"))
        out.insert(index + 1, "# Sample.color  red")
        return out

    path = _write_variant(tmp_path, DATA / "cu_metal_rt.xdi", edit)
    with pytest.raises(FileFormatError, match="no ':'"):
        read_xdi(path)


def test_date_time_forms(tmp_path):
    cases = {
        "2001-06-26T22:27:31": False,
        "2001-06-26 22:27:31": False,
        "2001-06-26T22:27:31Z": False,
        "2001-06-26T22:27:31+02:00": False,
        "2001-02-29T10:00:00": True,  # not a leap year
        "2001-06-26T25:00:00": True,
        "26/06/2001 22:27": True,
    }
    for value, bad in cases.items():
        def edit(lines, value=value):
            return [f"# Scan.start_time: {value}" if ln.startswith("# Scan.start_time") else ln
                    for ln in lines]

        xdi = read_xdi(_write_variant(tmp_path, BAD / "bad_00.xdi", edit))
        flagged = any("Scan.start_time" in w for w in xdi.warnings)
        assert flagged == bad, (value, xdi.warnings)


def test_tables():
    assert len(ELEMENT_SYMBOLS) == 118 == len(set(ELEMENT_SYMBOLS))
    assert ELEMENT_SYMBOLS[0] == "H" and ELEMENT_SYMBOLS[28] == "Cu" and ELEMENT_SYMBOLS[-1] == "Og"
    assert {"K", "L3", "M5", "N7", "O7", "P3", "L", "M", "N", "O", "P"} <= EDGE_NAMES
    assert not {"L4", "M6", "P4", "Foo"} & EDGE_NAMES


def test_module_import_is_light():
    import subprocess
    import sys

    code = (
        "import sys, xafsflow.io.xdi; "
        "heavy = {'scipy', 'pandas', 'matplotlib', 'h5py', 'dask', 'larch'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
