"""A measurement campaign: validated configuration plus the scan sheet.

Everything here runs before any job does (the Snakefile calls it while the
DAG is built), so every problem with the campaign description stops a dry run
with one message that names the sheet line, the scan and the field.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from xafsflow import schemas
from xafsflow.errors import ConfigError, InputError, ScanSheetError

KINDS = ("xanes", "exafs", "xmcd", "stack", "domain_image")
KIND_FORMATS = {
    "xanes": ("xdi", "columns"),
    "exafs": ("xdi", "columns"),
    "xmcd": ("xdi", "columns"),
    "stack": ("tiff_stack", "hdf5_stack"),
    "domain_image": ("image",),
}
# Sheet fields that name columns of the raw file (checked against its labels).
COLUMN_FIELDS = ("energy", "i0", "itrans", "ifluor", "mu", "mu_minus")


@dataclass
class Scan:
    """One row of the scan sheet, validated, with its resolved analysis parameters."""

    scan_id: str
    kind: str
    format: str
    paths: list[str]
    line: int
    fields: dict
    params: dict = field(default_factory=dict)

    def mapping(self) -> dict:
        """Column mapping given in the sheet (field -> column label or 1-based index)."""
        return {k: self.fields[k] for k in COLUMN_FIELDS if k in self.fields and self.kind != "stack"}


@dataclass
class Campaign:
    """A validated campaign: configuration and scans."""

    config: dict
    sheet: str
    scans: list[Scan]

    @property
    def name(self) -> str:
        return self.config["campaign"]

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def results(self) -> Path:
        return Path(self.config["results"]) / self.name

    @property
    def config_hash(self) -> str:
        return config_hash(self.config)

    def scan(self, scan_id: str) -> Scan:
        for s in self.scans:
            if s.scan_id == scan_id:
                return s
        raise KeyError(scan_id)

    def ids(self, *kinds: str) -> list[str]:
        return [s.scan_id for s in self.scans if not kinds or s.kind in kinds]


def config_hash(config: dict) -> str:
    """sha256 of the validated configuration, canonical JSON (sorted keys)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def validate_config(config: dict) -> dict:
    """Validate a campaign configuration and fill in the schema's defaults.

    Returns a deep copy; raises :class:`ConfigError` listing every problem.
    """
    cfg = copy.deepcopy(dict(config))
    problems = schemas.validate(cfg, schemas.load_schema("config"))
    if problems:
        lines = "; ".join(f"{where}: {msg}" for where, msg in problems)
        raise ConfigError(f"invalid configuration: {lines}")
    return cfg


def load_config(path: str | Path) -> dict:
    """Read a YAML configuration file and validate it."""
    try:
        with open(path) as fh:
            cfg = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read configuration: {exc.strerror}", path) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", path) from None
    try:
        return validate_config(cfg)
    except ConfigError as exc:
        raise ConfigError(exc.reason, path) from None


def parse_overrides(text: str) -> dict:
    """Parse ``"normalize.pre1=-200; normalize.nnorm=1"`` into a nested dict.

    Values are YAML scalars or flow sequences. Raises ``ValueError`` on a malformed item.
    """
    out: dict = {}
    for item in (t.strip() for t in text.split(";")):
        if not item:
            continue
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form section.key=value")
        key, value = (s.strip() for s in item.split("=", 1))
        parts = key.split(".")
        if not all(parts):
            raise ValueError(f"override key {key!r} is not of the form section.key")
        try:
            parsed = yaml.safe_load(value) if value else None
        except yaml.YAMLError:
            raise ValueError(f"override {key!r} has an unreadable value {value!r}") from None
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {key!r} conflicts with another override")
        node[parts[-1]] = parsed
    return out


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def resolve_params(config: dict, kind: str, overrides: dict | None = None) -> dict:
    """Analysis parameters for one scan: kind defaults from ``config`` + row overrides.

    Raises ``ValueError`` naming the offending key when the result fails the schema
    (unknown keys included).
    """
    params = _merge(config["analysis"][kind], overrides or {})
    schema = schemas.load_schema("config")
    kind_schema = schema["properties"]["analysis"]["properties"][kind]
    kind_schema = dict(kind_schema, definitions=schema["definitions"])
    problems = schemas.validate(params, kind_schema)
    if problems:
        raise ValueError("; ".join(f"{w}: {m}" for w, m in problems))
    return params


def read_scan_sheet(path: str | Path, config: dict, produced: set[str] | None = None) -> list[Scan]:
    """Read and validate a scan sheet (TSV with a header line).

    Parameters
    ----------
    path : path of the TSV.
    config : validated configuration (for the analysis defaults).
    produced : raw paths that a workflow rule will create; any other path must exist.

    Raises
    ------
    ScanSheetError
        On the first problem, naming the line, the scan and the field.
    """
    path = Path(path)
    row_schema = schemas.load_schema("scans")
    known = set(row_schema["properties"])
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScanSheetError(f"cannot read scan sheet: {exc.strerror}", path) from None
    lines = [(i + 1, ln) for i, ln in enumerate(text.splitlines()) if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise ScanSheetError("scan sheet is empty (expected a header line and one row per scan)", path)
    header_line, header = lines[0]
    columns = [c.strip() for c in next(csv.reader([header], delimiter="\t"))]
    for c in columns:
        if c not in known:
            raise ScanSheetError(
                f"unknown column {c!r} in the header; known columns: {', '.join(sorted(known))}", path, header_line
            )
    scans: list[Scan] = []
    seen: dict[str, int] = {}
    for lineno, raw in lines[1:]:
        cells = next(csv.reader([raw], delimiter="\t"))
        if len(cells) > len(columns):
            raise ScanSheetError(f"{len(cells)} cells but the header has {len(columns)} columns", path, lineno)
        row = {c: v.strip() for c, v in zip(columns, cells) if v.strip() != ""}
        sid = row.get("scan_id", "?")

        def fail(field_: str, msg: str):
            raise ScanSheetError(f"scan {sid!r}, field {field_!r}: {msg}", path, lineno)

        if "pixel_size" in row:
            try:
                row["pixel_size"] = float(row["pixel_size"])
            except ValueError:
                fail("pixel_size", f"{row['pixel_size']!r} is not a number")
        problems = schemas.validate(row, row_schema, defaults=False)
        if problems:
            where, msg = problems[0]
            if where == "(top level)" and "required" in msg:
                where = msg.split("'")[1] if "'" in msg else where
            fail(where, msg)
        if sid in seen:
            fail("scan_id", f"duplicate scan_id (first on line {seen[sid]})")
        seen[sid] = lineno
        kind, fmt = row["kind"], row["format"]
        if fmt not in KIND_FORMATS[kind]:
            fail("format", f"format {fmt!r} does not fit kind {kind!r} (use one of {', '.join(KIND_FORMATS[kind])})")
        paths = [p.strip() for p in row["path"].split(";") if p.strip()]
        if kind == "xmcd":
            if len(paths) not in (1, 2):
                fail("path", "an XMCD pair is two paths separated by ';' or one file with both helicities")
            if len(paths) == 1 and "mu_minus" not in row:
                fail("mu_minus", "a one-file XMCD pair needs the minus-helicity column in 'mu_minus'")
        elif len(paths) != 1:
            fail("path", "exactly one path expected for this kind")
        if fmt == "columns":
            if "energy" not in row:
                fail("energy", "a columns file needs the energy column")
            if not ("mu" in row or ("i0" in row and ("itrans" in row or "ifluor" in row))):
                fail("mu", "give 'mu', or 'i0' with 'itrans' (transmission) or 'ifluor' (fluorescence)")
        if fmt == "tiff_stack" and "energy" not in row:
            fail("energy", "a TIFF stack needs its energies file (one energy in eV per frame) in 'energy'")
        if fmt == "hdf5_stack" and "dataset" not in row:
            fail("dataset", "an HDF5 stack needs the dataset path of the (energy, y, x) array")
        overrides = {}
        if "overrides" in row:
            try:
                overrides = parse_overrides(row["overrides"])
            except ValueError as exc:
                fail("overrides", str(exc))
        try:
            params = resolve_params(config, kind, overrides)
        except ValueError as exc:
            fail("overrides", str(exc))
        extra = [row["energy"]] if fmt == "tiff_stack" else []
        for p in paths + extra:
            if not Path(p).exists() and p not in (produced or set()):
                which = "energy" if p in extra else "path"
                fail(which, f"raw file {p!r} does not exist and no rule produces it")
        scan = Scan(sid, kind, fmt, paths, lineno, row, params)
        _check_columns(scan, path)
        scans.append(scan)
    if not scans:
        raise ScanSheetError("scan sheet has a header but no scans", path)
    return scans


def _check_columns(scan: Scan, sheet: Path) -> None:
    """Check sheet column names against an existing file's labels, when it reads cleanly.

    A file that does not read is left for the ingest step, which fails that scan
    alone (other scans go on).
    """
    mapping = scan.mapping()
    if not mapping or scan.format not in ("xdi", "columns"):
        return
    from xafsflow.io.columns import column_labels

    for p in scan.paths:
        if not Path(p).exists():
            continue
        try:
            labels = column_labels(p, scan.format)
        except InputError:
            continue
        for fld, col in mapping.items():
            if col.isdigit():
                ok = 1 <= int(col) <= len(labels)
            else:
                ok = col.lower() in [lb.lower() for lb in labels]
            if not ok:
                raise ScanSheetError(
                    f"scan {scan.scan_id!r}, field {fld!r}: column {col!r} is not in {p} "
                    f"(its columns: {', '.join(labels)})",
                    sheet,
                    scan.line,
                )


def load_campaign(config: dict | str | Path, produced: set[str] | None = None) -> Campaign:
    """Validate a configuration (dict or YAML path) and its scan sheet."""
    cfg = load_config(config) if isinstance(config, (str, Path)) else validate_config(config)
    scans = read_scan_sheet(cfg["scans"], cfg, produced)
    return Campaign(cfg, cfg["scans"], scans)
