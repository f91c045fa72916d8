"""A measurement campaign: validated configuration plus the scan sheet.

Everything here runs before any job does (the Snakefile calls it while the
DAG is built), so every problem with the campaign description stops a dry run
with one message that names the file, the sheet line, the scan and the field,
or the config key path. Parameters that can be checked without the data
(priors, K ranges, chain lengths, windows) are checked here too, in the words
the job would use.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from xafsflow import schemas
from xafsflow.errors import ConfigError, InputError, ScanSheetError

# Sheet fields that name columns of the raw file (checked against its labels).
COLUMN_FIELDS = ("energy", "i0", "itrans", "ifluor", "mu", "mu_minus")
# Version of each step's output for the same input and parameters; part of its parameter hash.
STEP_VERSIONS = {"ingest": 3, "normalize": 1}  # ingest 3: stack stores carry the sheet's element and edge


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

    def products(self) -> list:
        """The registered products this scan gets."""
        from xafsflow.products import registry

        return [p for p in registry() if p.applies_to(self.kind, self.params)]


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
    def layout(self):
        from xafsflow.layout import Layout

        return Layout(self.results)

    @property
    def config_hash(self) -> str:
        return config_hash(self.config)

    def scan(self, scan_id: str) -> Scan:
        return self._by_id()[scan_id]

    def _by_id(self) -> dict:
        if getattr(self, "_index", None) is None or len(self._index) != len(self.scans):
            self._index = {s.scan_id: s for s in self.scans}
        return self._index

    def ids(self, *kinds: str) -> list[str]:
        return [s.scan_id for s in self.scans if not kinds or s.kind in kinds]

    def product_ids(self, product) -> list[str]:
        """Scans that get ``product``."""
        return [s.scan_id for s in self.scans if product.applies_to(s.kind, s.params)]

    def step_hash(self, scan_id: str, step: str) -> str:
        """Hash of what one step of one scan depends on: its own resolved parameters and code version.

        A rule carries it in ``params``, so a changed parameter reruns that step
        (and what depends on its output) and nothing else.
        """
        scan = self.scan(scan_id)
        if step == "ingest":
            what = {"kind": scan.kind, "format": scan.format, "paths": scan.paths, "fields": scan.fields,
                    "chunk_pixels": self.config["stack"]["chunk_pixels"]}
        elif step == "normalize":
            what = {"normalize": scan.params.get("normalize", {})}
        else:
            from xafsflow.products import get

            prod = get(step)
            what = {prod.params_key: scan.params.get(prod.params_key, {}), "seed": self.seed,
                    "version": prod.version}
        what["step_version"] = STEP_VERSIONS.get(step)
        return config_hash(what)[:16]


def config_hash(config: dict) -> str:
    """sha256 of a configuration (or any JSON-able parameters), canonical JSON (sorted keys)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------------- config
def validate_config(config: dict, source: str | Path | None = None) -> dict:
    """Validate a campaign configuration and fill in the schema's defaults.

    Returns a deep copy; raises :class:`ConfigError` naming ``source``, the key
    path and what is wrong (every problem, one line).
    """
    cfg = copy.deepcopy(dict(config))
    problems = schemas.problems(schemas.compiled("config"), cfg)
    if problems:
        lines = "; ".join(f"key {where}: {msg}" for where, msg in problems)
        raise ConfigError(f"invalid configuration: {lines}", source)
    for kind, block in cfg["analysis"].items():
        for msg in check_kind_params(kind, block):
            raise ConfigError(f"invalid configuration: key analysis.{kind}.{msg}", source)
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
    if not isinstance(cfg, dict):
        raise ConfigError("a configuration is a YAML mapping of keys (campaign, scans, ...)", path)
    return validate_config(cfg, path)


def check_normalize(block: dict) -> list[str]:
    """Problems with a ``normalize`` block: its windows must be ordered."""
    out = []
    if not block["pre1"] < block["pre2"]:
        out.append(f"normalize: pre-edge window [{block['pre1']}, {block['pre2']}] eV is not ordered (pre1 < pre2)")
    if block["norm2"] is not None and not block["norm1"] < block["norm2"]:
        out.append(f"normalize: post-edge window [{block['norm1']}, {block['norm2']}] eV is not ordered "
                   "(norm1 < norm2)")
    return out


def check_kind_params(kind: str, params: dict, n_points: int | None = None) -> list[str]:
    """Problems with one kind's resolved analysis parameters (normalize windows, every product's checks).

    Each message starts with the block's key (``normalize: ...``, ``posterior: ...``).
    """
    from xafsflow.products import registry

    out = check_normalize(params["normalize"]) if "normalize" in params else []
    for prod in registry():
        if prod.applies_to(kind, params):
            out += [f"{prod.params_key}: {m}" for m in prod.impl().check(params[prod.params_key], n_points)]
            # optional: problems across the kind's blocks (e.g. a feature that needs another product)
            across = getattr(prod.impl(), "check_kind", None)
            out += [f"{prod.params_key}: {m}" for m in (across(kind, params) if across else [])]
    return out


def kind_params(kind: str, given: dict | None) -> dict:
    """A kind's analysis parameters: ``given`` completed with the schema's defaults, validated."""
    if given is None:
        return schemas.analysis_defaults(kind)
    try:
        return resolve_params({"analysis": {kind: {}}}, kind, given)
    except ValueError as exc:
        raise ConfigError(f"analysis parameters: {exc}") from None


# -------------------------------------------------------------------------- sheet
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
            out[k] = copy.deepcopy(v)  # the result gets defaults filled in: never share the caller's dicts
    return out


def resolve_params(config: dict, kind: str, overrides: dict | None = None) -> dict:
    """Analysis parameters for one scan: kind defaults from ``config`` + row overrides.

    Raises ``ValueError`` naming the offending key when the result fails the schema
    (unknown keys included).
    """
    params = _merge(config["analysis"][kind], overrides or {})
    problems = schemas.problems(schemas.compiled("config", kind), params)
    if problems:
        raise ValueError("; ".join(f"{w}: {m}" for w, m in problems))
    return params


class _SheetRow:
    """One data line of the scan sheet being checked; ``fail`` raises naming line, scan and field."""

    def __init__(self, sheet: Path, lineno: int, row: dict):
        self.sheet, self.lineno, self.row = sheet, lineno, row
        self.sid = row.get("scan_id", "?")

    def fail(self, field_: str, msg: str):
        raise ScanSheetError(f"scan {self.sid!r}, field {field_!r}: {msg}", self.sheet, self.lineno)


def _read_sheet_lines(path: Path) -> tuple[int, list[str], list[tuple[int, list[str]]]]:
    """(header line number, column names, [(line number, cells)]) of a TSV sheet."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScanSheetError(f"cannot read scan sheet: {exc.strerror}", path) from None
    lines = [(i + 1, ln) for i, ln in enumerate(text.splitlines()) if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise ScanSheetError("scan sheet is empty (expected a header line and one row per scan)", path)
    header_line, header = lines[0]
    columns = [c.strip() for c in next(csv.reader([header], delimiter="\t"))]
    known = set(schemas.load_schema("scans")["properties"])
    for c in columns:
        if c not in known:
            raise ScanSheetError(
                f"unknown column {c!r} in the header; known columns: {', '.join(sorted(known))}", path, header_line
            )
    rows = [(n, next(csv.reader([raw], delimiter="\t"))) for n, raw in lines[1:]]
    return header_line, columns, rows


def _check_row_schema(r: _SheetRow) -> None:
    row = r.row
    for key in ("pixel_size", "x_start", "x_step"):  # the sheet's number fields
        if key in row:
            try:
                row[key] = float(row[key])
            except ValueError:
                r.fail(key, f"{row[key]!r} is not a number")
    for key in ("register_upsample",):  # the sheet's integer fields
        if key in row:
            try:
                row[key] = int(row[key])
            except ValueError:
                r.fail(key, f"{row[key]!r} is not a whole number")
    problems = schemas.problems(schemas.compiled("scans", defaults=False), row)
    if problems:
        where, msg = problems[0]
        if where == "(top level)" and "required" in msg:
            where = msg.split("'")[1] if "'" in msg else where
        r.fail(where, msg)


def _check_row_files(r: _SheetRow, kind: str, fmt: str) -> list[str]:
    """Paths of the row, checked against its kind and format."""
    row = r.row
    formats = schemas.formats_by_kind()[kind]
    if fmt not in formats:
        r.fail("format", f"format {fmt!r} does not fit kind {kind!r} (use one of {', '.join(formats)})")
    paths = [p.strip() for p in row["path"].split(";") if p.strip()]
    if kind == "xmcd":
        if not paths or (len(paths) != 1 and len(paths) % 2):
            r.fail("path", "an XMCD pair is two paths separated by ';' (plus;minus), alternating repeats "
                           "(plus;minus;plus;minus...), or one file with both helicities")
        if len(paths) == 1 and "mu_minus" not in row:
            r.fail("mu_minus", "a one-file XMCD pair needs the minus-helicity column in 'mu_minus'")
    elif len(paths) != 1:
        r.fail("path", "exactly one path expected for this kind")
    if fmt == "columns":
        if "energy" not in row:
            r.fail("energy", "a columns file needs the energy column")
        if not ("mu" in row or ("i0" in row and ("itrans" in row or "ifluor" in row))):
            r.fail("mu", "give 'mu', or 'i0' with 'itrans' (transmission) or 'ifluor' (fluorescence)")
    if fmt == "xy":
        from xafsflow.io.columns import xy_fields_problem

        problem = xy_fields_problem(row)
        if problem is not None:
            r.fail(*problem)
    if fmt == "tiff_stack" and "energy" not in row:
        r.fail("energy", "a TIFF stack needs its energies file (one energy in eV per frame) in 'energy'")
    if fmt == "tiff_folder" and "energy" not in row:
        r.fail("energy", "a TIFF folder needs its energies file in 'energy' (one energy per image in natural "
                         "file-name order, or lines '<file> <energy>')")
    if "dark" in row and "flat" not in row:
        r.fail("dark", "a dark frame needs a flat frame: give 'flat' too (or use i0_region)")
    if "flat" in row and "i0_region" in row:
        r.fail("flat", "give either i0_region or flat (and dark), not both")
    if fmt == "hdf5_stack" and "dataset" not in row:
        r.fail("dataset", "an HDF5 stack needs the dataset path of the (energy, y, x) array")
    return paths


def stack_side_fields(fmt: str) -> tuple[str, ...]:
    """Sheet fields of a row holding input files besides its path (energies file, flat and dark frames)."""
    side = ("flat", "dark")
    return (("energy",) + side) if fmt in ("tiff_stack", "tiff_folder") else side


def _row_params(r: _SheetRow, config: dict, kind: str, cache: dict) -> dict:
    """Resolved analysis parameters of a row (rows with the same kind and overrides share one copy)."""
    text = r.row.get("overrides", "")
    key = (kind, text)
    if key not in cache:
        try:
            overrides = parse_overrides(text) if text else {}
        except ValueError as exc:
            r.fail("overrides", str(exc))
        try:
            cache[key] = resolve_params(config, kind, overrides)
        except ValueError as exc:
            r.fail("overrides", str(exc))
        # values a product needs for every row (e.g. n_holes of the XMCD sum rules), before any job runs
        from xafsflow.products import registry

        for prod in registry():
            row_problems = getattr(prod.impl(), "row_problems", None)
            if row_problems is not None and prod.applies_to(kind, cache[key]):
                for msg in row_problems(cache[key][prod.params_key]):
                    r.fail("overrides", f"{prod.params_key}: {msg}")
    return cache[key]


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
    produced = produced or set()
    _, columns, rows = _read_sheet_lines(path)
    scans: list[Scan] = []
    seen: dict[str, int] = {}
    params_cache: dict = {}
    for lineno, cells in rows:
        if len(cells) > len(columns):
            raise ScanSheetError(f"{len(cells)} cells but the header has {len(columns)} columns", path, lineno)
        r = _SheetRow(path, lineno, {c: v.strip() for c, v in zip(columns, cells) if v.strip() != ""})
        _check_row_schema(r)
        if r.sid in seen:
            r.fail("scan_id", f"duplicate scan_id (first on line {seen[r.sid]})")
        seen[r.sid] = lineno
        kind, fmt = r.row["kind"], r.row["format"]
        paths = _check_row_files(r, kind, fmt)
        params = _row_params(r, config, kind, params_cache)
        extra = {f: r.row[f] for f in stack_side_fields(fmt) if f in r.row}
        for p in paths + list(extra.values()):
            if p not in produced and not Path(p).exists():
                field_ = next((f for f, v in extra.items() if v == p), "path")
                r.fail(field_, f"raw file {p!r} does not exist and no rule produces it")
        scan = Scan(r.sid, kind, fmt, paths, lineno, r.row, params)
        _check_file(scan, path)
        scans.append(scan)
    if not scans:
        raise ScanSheetError("scan sheet has a header but no scans", path)
    _check_sizes(scans, path)
    return scans


def _check_sizes(scans: list[Scan], sheet: Path) -> None:
    """Refuse parameters that no existing file of the scans sharing them can support (e.g. k_max 100000).

    The bound is the largest file (in bytes) of each group of scans with the
    same kind and parameters: a K range that even it cannot support is a configuration
    mistake, stopped here; a single short (or truncated) file fails its own scan
    in its own job, with the same message, and the others go on.
    """
    from xafsflow.io.columns import count_data_rows

    groups: dict = {}  # (kind, parameters) -> (scan, bytes) of its largest file; stat only, no reading
    for scan in scans:
        if scan.format in ("xdi", "columns", "xy"):
            try:
                size = Path(scan.paths[0]).stat().st_size
            except OSError:
                continue
            key = (scan.kind, json.dumps(scan.params, sort_keys=True))
            if key not in groups or size > groups[key][1]:
                groups[key] = (scan, size)
    for (kind, params_json), (scan, _) in groups.items():
        for msg in _size_problems(kind, params_json, count_data_rows(scan.paths[0])):
            raise ScanSheetError(f"scan {scan.scan_id!r}: {msg} (the largest file with these parameters; "
                                 f"config analysis.{kind} or the row's overrides)", sheet, scan.line)


def _check_file(scan: Scan, sheet: Path) -> None:
    """Check an existing spectrum file's column names against the row's mapping.

    A file that does not read is left for the ingest step, which fails that scan
    alone (other scans go on).
    """
    if scan.format not in ("xdi", "columns", "xy") or not Path(scan.paths[0]).exists():
        return
    from xafsflow.io.columns import column_labels

    if scan.format == "xy":
        _check_xy_file(scan, sheet)
        return

    for p in scan.paths if scan.mapping() else []:
        if not Path(p).exists():
            continue
        try:
            labels = column_labels(p, scan.format)
        except InputError:
            continue
        for fld, col in scan.mapping().items():
            ok = 1 <= int(col) <= len(labels) if col.isdigit() else col.lower() in [lb.lower() for lb in labels]
            if not ok:
                raise ScanSheetError(f"scan {scan.scan_id!r}, field {fld!r}: column {col!r} is not in {p} "
                                     f"(its columns: {', '.join(labels)})", sheet, scan.line)


def _check_xy_file(scan: Scan, sheet: Path) -> None:
    """An existing ``xy`` file's columns against the row's x/y fields (reads its header and first data line)."""
    from xafsflow.io.columns import xy_layout, xy_selection_problem

    try:
        labels, ncol = xy_layout(scan.paths[0])
    except InputError:
        return  # left for the ingest step, which fails this scan alone
    problem = xy_selection_problem(labels, ncol, scan.fields)
    if problem is not None:
        fld, msg = problem
        raise ScanSheetError(f"scan {scan.scan_id!r}, field {fld!r}: {msg} ({scan.paths[0]})", sheet, scan.line)


@lru_cache(maxsize=4096)
def _size_problems(kind: str, params_json: str, n_rows: int) -> tuple[str, ...]:
    return tuple(check_kind_params(kind, json.loads(params_json), n_rows))


def load_campaign(config: dict | str | Path, produced: set[str] | None = None,
                  source: str | Path | None = None) -> Campaign:
    """Validate a configuration (dict or YAML path) and its scan sheet.

    ``source`` names where a dict came from (config file(s)) in error messages.
    """
    if isinstance(config, (str, Path)):
        cfg = load_config(config)
    else:
        cfg = validate_config(config, source)
    scans = read_scan_sheet(cfg["scans"], cfg, produced)
    return Campaign(cfg, cfg["scans"], scans)
