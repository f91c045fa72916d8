"""The ingest and normalize steps: raw files -> ingested store -> normalized scan store.

These are the functions the CLI calls; each reads only its inputs and writes
only its output store (atomically). What a step does for each scan kind is
looked up in a table (``INGEST_BY_KIND``, ``NORMALIZE_BY_KIND``) whose keys are
the scan sheet schema's kinds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xafsflow.errors import AnalysisInputError, FileFormatError
from xafsflow.io import store as st

# Sheet fields that name columns of a spectrum file.
COLUMN_FIELDS = ("energy", "i0", "itrans", "ifluor", "mu", "mu_minus")
# Keywords of xafsflow.xas.normalize_edge among the config's normalize keys.
NORMALIZE_KEYS = ("e0", "pre1", "pre2", "norm1", "norm2", "nnorm", "smooth_ev")


# ============================================================================ ingest
@dataclass
class _Table:
    """One raw spectrum file as read: labels, data, metadata, warnings and its energy axis."""

    labels: list[str]
    data: np.ndarray
    meta: dict
    warnings: list[str]
    energy: np.ndarray | None
    energy_error: str | None


def _read_table(path: str, fmt: str, mapping: dict) -> _Table:
    """Read one spectrum file; the energy axis from the sheet's mapping or the file's own."""
    from xafsflow.io.columns import pick_column

    if fmt == "xdi":
        from xafsflow.io.xdi import energy_axis, read_xdi

        x = read_xdi(path)
        t = _Table(x.column_labels, x.data, x.metadata(), list(x.warnings), None, None)
        try:
            t.energy, ew = energy_axis(x)
            t.warnings += list(ew)
        except AnalysisInputError as exc:
            t.energy_error = exc.reason
    else:
        from xafsflow.io.columns import read_columns

        c = read_columns(path)
        t = _Table(c.labels, c.data, {"header": c.header, "column_labels": c.labels}, list(c.warnings), None, None)
    if "energy" in mapping:
        t.energy, t.energy_error = pick_column(t.labels, t.data, mapping["energy"], path, "energy"), None
    elif t.energy is None and t.energy_error is None:
        t.energy_error = f"no energy column (columns: {', '.join(t.labels)}); name it in the sheet"
    return t


def _increasing(energy: np.ndarray, arrays: list[np.ndarray], path: str):
    """Return energy (and arrays) in strictly increasing order, or raise naming the row."""
    if energy.size >= 2 and np.all(np.diff(energy) < 0):
        return energy[::-1].copy(), [a[::-1].copy() for a in arrays], ["energy axis was decreasing; reversed"]
    d = np.diff(energy)
    if np.any(d <= 0):
        i = int(np.argmax(d <= 0)) + 1
        raise FileFormatError(
            f"energy is not strictly increasing at data row {i + 1} ({energy[i - 1]} then {energy[i]} eV)", path
        )
    return energy, arrays, []


def _single_spectrum(table: _Table, mapping: dict, path: str) -> dict:
    from xafsflow.io.columns import absorption

    mu, how = absorption(table.labels, table.data, mapping, path)
    energy, (mu,), warnings = _increasing(np.asarray(table.energy, dtype=np.float64), [mu], path)
    return {"energy": energy, "mu": mu, "mu_from": how, "warnings": warnings}


def xmcd_pair(tables: list[_Table], mapping: dict, paths: list[str]) -> dict:
    """The two helicity spectra of an XMCD pair on one energy grid.

    One file holds both helicities (``mu`` and the ``mu_minus`` column), or two
    files hold one each (plus first); a minus scan on another grid is
    interpolated onto the plus grid (with a warning).
    """
    from xafsflow.io.columns import pick_column

    if len(tables) == 1:
        plus = _single_spectrum(tables[0], mapping, paths[0])
        minus = pick_column(tables[0].labels, tables[0].data, mapping["mu_minus"], paths[0], "mu_minus")
        if tables[0].energy[0] > tables[0].energy[-1]:  # _single_spectrum reversed the axis
            minus = minus[::-1].copy()
        plus["mu_minus"] = minus
        return plus
    plus = _single_spectrum(tables[0], mapping, paths[0])
    minus = _single_spectrum(tables[1], mapping, paths[1])
    plus["warnings"] += minus["warnings"]
    if minus["energy"].shape == plus["energy"].shape and np.allclose(minus["energy"], plus["energy"], atol=1e-3):
        plus["mu_minus"] = minus["mu"]
    else:
        plus["warnings"].append("helicity scans on different energy grids: minus interpolated onto plus")
        plus["mu_minus"] = np.interp(plus["energy"], minus["energy"], minus["mu"])
    return plus


def xmcd_repeats(tables: list[_Table], mapping: dict, paths: list[str]) -> dict:
    """An XMCD pair from alternating-helicity repeats (plus, minus, plus, minus, ...).

    Each helicity's repeats are averaged on its first repeat's grid
    (:func:`xafsflow.xas.repeats.average_repeats`: the spread gives the
    per-point standard error ``mu_sd`` / ``mu_minus_sd``, a deviating repeat a
    warning); the minus average is interpolated onto the plus grid when the
    grids differ (with a warning).
    """
    from xafsflow.xas.repeats import average_repeats

    singles = [_single_spectrum(t, mapping, p) for t, p in zip(tables, paths)]
    warnings = [w for one in singles for w in one["warnings"]]
    out = {}
    for key, part in (("mu", singles[0::2]), ("mu_minus", singles[1::2])):
        names = [Path(p).name for p in paths[(0 if key == "mu" else 1)::2]]
        e, mean, sd, warns = average_repeats([o["energy"] for o in part], [o["mu"] for o in part], names)
        warnings += warns
        out[key] = (e, mean, sd)
    e, mp, sp = out["mu"]
    em, mm, sm = out["mu_minus"]
    if em.shape != e.shape or not np.allclose(em, e, atol=1e-3):
        warnings.append("helicity scans on different energy grids: minus interpolated onto plus")
        mm, sm = np.interp(e, em, mm), np.interp(e, em, sm)
    warnings.append(f"{len(singles[0::2])} plus and {len(singles[1::2])} minus repeats averaged per helicity")
    return {"energy": e, "mu": mp, "mu_minus": mm, "mu_sd": sp, "mu_minus_sd": sm,
            "mu_from": singles[0]["mu_from"], "warnings": warnings}


def ingest_spectrum(paths: list[str], fmt: str, fields: dict) -> dict:
    """Read one spectrum (or an XMCD pair) into arrays and metadata.

    Returns a dict with ``energy`` (eV), ``mu`` (and ``mu_minus`` for a pair),
    ``metadata``, ``warnings`` and ``energy_error`` (why there is no energy axis,
    for a file that is valid but not an absorption scan; then ``labels`` and
    ``table`` hold what was read).
    """
    mapping = {k: fields[k] for k in COLUMN_FIELDS if k in fields}
    out: dict = {"metadata": {}, "warnings": [], "energy_error": None}
    tables = []
    for p in paths:
        t = _read_table(p, fmt, mapping)
        out["metadata"][str(p)] = t.meta
        out["warnings"] += [f"{Path(p).name}: {w}" for w in t.warnings]
        if t.energy is None:
            out.update(energy_error=t.energy_error, labels=list(t.labels), table=t.data)
            return out
        tables.append(t)
    is_pair = len(paths) == 2 or "mu_minus" in mapping
    if len(paths) > 2:  # alternating-helicity repeats of an XMCD pair
        spectra = xmcd_repeats(tables, mapping, paths)
    else:
        spectra = xmcd_pair(tables, mapping, paths) if is_pair else _single_spectrum(tables[0], mapping, paths[0])
    out["warnings"] += spectra.pop("warnings")
    out.update(spectra)
    for key in ("mu", "mu_minus"):
        if key in out and not np.all(np.isfinite(out[key])):
            raise AnalysisInputError(f"{key} has non-finite values (check i0/itrans/ifluor)", paths[0])
    return out


def _element_edge(meta: dict, fields: dict, warnings: list[str]) -> tuple[str | None, str | None]:
    el = fields.get("element")
    edge = fields.get("edge")
    for m in meta.values():
        f = (m or {}).get("fields", {}).get("element", {})
        fel, fedge = f.get("symbol"), f.get("edge")
        if el and fel and fel != el:
            warnings.append(f"sheet element {el} differs from the file's {fel}; using the sheet's")
        if edge and fedge and fedge != edge:
            warnings.append(f"sheet edge {edge} differs from the file's {fedge}; using the sheet's")
        el = el or fel
        edge = edge or fedge
    return el, edge


@dataclass
class IngestRequest:
    """One scan to ingest: sheet row values, output and provenance settings."""

    scan_id: str
    kind: str
    fmt: str
    paths: list[str]
    out: Path
    fields: dict = field(default_factory=dict)
    energies: str | None = None
    chunk_pixels: int = 4096
    seed: int | None = None
    params_hash: str | None = None

    @property
    def inputs(self) -> list[str]:
        """Input files (a folder stack: its files; flat and dark frames) for the provenance's checksums."""
        files: list[str] = []
        for p in self.paths:
            files += sorted(str(f) for f in Path(p).iterdir()) if Path(p).is_dir() else [p]
        side = [self.fields[f] for f in ("flat", "dark") if self.fields.get(f)]
        return files + ([self.energies] if self.energies else []) + side

    def attrs(self) -> dict:
        return {"scan_id": self.scan_id, "kind": self.kind, "format": self.fmt, "sheet_fields": self.fields}

    def provenance(self, warnings: list[str], extra_params: dict | None = None) -> dict:
        return st.provenance("ingest", self.inputs, {"fields": self.fields, **(extra_params or {})}, self.seed,
                             self.params_hash, warnings)


def _ingest_spectrum_kind(req: IngestRequest) -> None:
    r = ingest_spectrum(req.paths, req.fmt, req.fields)
    warnings = r["warnings"]
    el, edge = _element_edge(r["metadata"], req.fields, warnings)
    attrs = dict(req.attrs(), element=el, edge=edge, file_metadata=r["metadata"], energy_error=r["energy_error"])
    prov = req.provenance(warnings)
    with st.atomic_store(req.out) as g:
        if r["energy_error"]:
            st.put_array(g, "table", r["table"], ("point", "column"))
            attrs["table_labels"] = r["labels"]
        else:
            st.put_array(g, "energy", r["energy"], ("energy",), attrs={"units": "eV"})
            st.put_array(g, "mu", r["mu"], ("energy",), attrs={"how": r["mu_from"]})
            if "mu_minus" in r:
                st.put_array(g, "mu_minus", r["mu_minus"], ("energy",))
            for key in ("mu_sd", "mu_minus_sd"):  # repeats: standard error of each helicity's average
                if key in r:
                    st.put_array(g, key, r[key], ("energy",), attrs={"meaning": "sd of the repeats / sqrt(n)"})
        st.set_attrs(g, **attrs, **{st.PROVENANCE_KEY: prov})


def _ingest_xy(req: IngestRequest) -> None:
    """Kind ``spectrum``: x and y of a plain text file (:func:`xafsflow.io.columns.read_xy`)."""
    from xafsflow.io.columns import read_xy

    s = read_xy(req.paths[0], req.fields)
    name = Path(req.paths[0]).name
    warnings = [f"{name}: {w}" for w in s.warnings]
    unit = req.fields.get("x_unit") or "arbitrary"
    meta = {str(req.paths[0]): {"header": s.header, "column_labels": s.labels}}
    prov = req.provenance(warnings)
    with st.atomic_store(req.out) as g:
        st.put_array(g, "energy", s.x, ("energy",), attrs={"units": unit, "how": s.x_from})
        st.put_array(g, "mu", s.y, ("energy",), attrs={"how": s.y_from})
        st.set_attrs(g, **req.attrs(), element=None, edge=None, file_metadata=meta, energy_error=None,
                     **{st.PROVENANCE_KEY: prov})


def _ingest_image(req: IngestRequest) -> None:
    from xafsflow.io.stacks import read_image

    img, meta = read_image(req.paths[0])
    warnings = []
    px = req.fields.get("pixel_size") or meta.get("pixel_size_from_file")
    if px is None:
        warnings.append("no pixel size in the sheet or the file; lengths are in pixels")
    prov = req.provenance(warnings)
    with st.atomic_store(req.out) as g:
        st.put_array(g, "image", img, ("y", "x"))
        st.set_attrs(g, **req.attrs(), pixel_size_um=px, file_metadata=meta, **{st.PROVENANCE_KEY: prov})


def _open_stack(req: IngestRequest):
    """(dask array (energy, y, x), increasing energies, metadata, closer) of a stack, corrections applied."""
    from xafsflow.distributed import scratch_dir
    from xafsflow.io import stacks

    if req.fmt == "stxm":
        return _open_stxm(req)
    return stacks.open_stack(req.fmt, req.paths[0], req.fields, req.energies, req.chunk_pixels, scratch_dir())


def _open_stxm(req: IngestRequest):
    """An STXM stack (``.hdr`` + ``.xim`` frames) as optical density -ln(I / I0), pixels of its mask as NaN."""
    import dask.array as da

    from xafsflow.imaging.pixels import optical_density
    from xafsflow.io.stacks import stack_chunks
    from xafsflow.io.stxm import read_stxm

    r = read_stxm(req.paths[0], i0=req.fields.get("i0"))
    if r["i0"] is None:
        raise FileFormatError("no I0 spectrum for the optical density: put i0.xsp beside the header or name it "
                              "in the sheet's 'i0' field", req.paths[0])
    od, n_bad = optical_density(r["counts"], r["i0"])
    meta = dict(r["meta"], frames=len(r["files"]), od="-ln(I / I0), I0 from the i0 spectrum",
                nonpositive_counts=n_bad, warnings=list(r["warnings"]))
    if n_bad:
        meta["warnings"].append(f"{n_bad} non-positive counts: those pixels' OD is NaN (excluded downstream)")
    if r["mask"] is not None:
        od[:, r["mask"]] = np.nan
        meta["masked_by_file"] = int(r["mask"].sum())
        meta["warnings"].append(f"{int(r['mask'].sum())} pixels excluded by the mask file "
                                f"{Path(r['meta']['mask_file']).name} (OD set to NaN)")
    if np.isnan(od).any(axis=0).all():
        raise FileFormatError("every pixel is masked (mask file or non-positive counts): nothing is left to "
                              "analyse; check the mask and the frames", req.paths[0])
    data = da.from_array(od.astype(np.float32), chunks=stack_chunks(od.shape, req.chunk_pixels))
    return data, np.asarray(r["energies"], dtype=np.float64), meta, None


def _ingest_stack(req: IngestRequest) -> None:
    import dask.array as da

    from xafsflow.io import stacks

    data, energies, meta, closer = _open_stack(req)
    chunks = data.chunksize
    try:
        warnings: list[str] = list(meta.pop("warnings", []))
        shifts = meta.pop("registration_shifts", None)
        order, reversed_ = stacks.frame_order(energies, req.energies or req.paths[0])
        if reversed_:  # formats read whole (stxm); the others come in increasing energy
            warnings.append("energies were strictly decreasing: frames reversed into increasing energy")
            data, energies = data[order].rechunk(chunks), energies[order]
        data = data.astype(np.float32)
        px = req.fields.get("pixel_size") or meta.get("pixel_size_um")
        prov = req.provenance(warnings, {"chunks": list(chunks), "corrections": meta.get("corrections", {}),
                                         "energies_eV": energies.tolist(), "pixel_size_um": px,
                                         "pixel_size_from": "sheet" if req.fields.get("pixel_size")
                                         else ("file" if px is not None else None)})
        with st.atomic_store(req.out) as g:
            st.put_array(g, "energy", energies, ("energy",), attrs={"units": "eV"})
            target = st.create_array(g, "mu", data.shape, np.float32, ("energy", "y", "x"), chunks)
            da.store(data, target, lock=False, compute=True)
            if shifts is not None:
                st.put_array(g, "registration_shift", shifts, ("energy", "axis"),
                             attrs={"units": "pixel", "axes": ["y", "x"], "meaning": "shift applied to each frame"})
            # element and edge from the sheet (as for spectra): the grains' pre-edge window needs them
            st.set_attrs(g, **req.attrs(), file_metadata=meta, pixel_size_um=px, element=req.fields.get("element"),
                         edge=req.fields.get("edge"), **{st.PROVENANCE_KEY: prov})
    finally:
        if closer is not None:
            closer.close()


INGEST_BY_KIND = {
    "xanes": _ingest_spectrum_kind,
    "exafs": _ingest_spectrum_kind,
    "xmcd": _ingest_spectrum_kind,
    "stack": _ingest_stack,
    "domain_image": _ingest_image,
    "spectrum": _ingest_xy,
}


def ingest(scan_id: str, kind: str, fmt: str, paths: list[str], out: str | Path, fields: dict | None = None,
           energies: str | None = None, chunk_pixels: int = 4096, seed: int | None = None,
           params_hash: str | None = None) -> Path:
    """Read raw file(s) of one scan and write its ingested store ``out``.

    Nothing is written when the input is malformed (an :class:`InputError` is raised).
    """
    if kind not in INGEST_BY_KIND:
        raise ValueError(f"unknown kind {kind!r} (use {', '.join(INGEST_BY_KIND)})")
    req = IngestRequest(scan_id, kind, fmt, list(paths), Path(out), dict(fields or {}), energies, chunk_pixels,
                        seed, params_hash)
    INGEST_BY_KIND[kind](req)
    return Path(out)


# ========================================================================= normalize
def normalize_keywords(params: dict) -> dict:
    """The keywords of :func:`xafsflow.xas.normalize_edge` from a kind's analysis parameters."""
    p = params.get("normalize", {})
    return {k: p[k] for k in NORMALIZE_KEYS if k in p}


def _noise_sd(mu: np.ndarray) -> float:
    """White-noise sd estimated from second differences (MAD)."""
    resid = np.diff(mu, 2) / math.sqrt(6.0)
    return float(np.median(np.abs(resid)) / 0.6745) if resid.size else 0.0


def tabulated_edge(element: str | None, edge: str | None) -> float | None:
    if not (element and edge):
        return None
    try:
        from xraydb import xray_edge

        return float(xray_edge(element, edge).energy)
    except Exception:  # noqa: BLE001 - unknown element/edge: no tabulated energy
        return None


def spectrum_flags(energy, mu, res, element, edge, max_step_change: float) -> list[str]:
    """Quality flags of one normalized spectrum (documented in the README).

    ``res`` is the :class:`~xafsflow.xas.normalize.EdgeNormalization` of ``mu``.
    """
    from xafsflow.xas.normalize import edge_step_stability

    e0, step, p = float(res.e0), float(res.edge_step), res.params
    flags = []
    # points of the windows actually fitted (clamped to the data by normalize_edge)
    npre, npost = int(p["pre_points"]), int(p["post_points"])
    if npre < 10:
        flags.append(f"short_pre_edge({npre} points)")
    if npost < 10:
        flags.append(f"short_post_edge({npost} points)")
    if "pre2" in p["clamped"]:  # the scan starts too late for the pre-edge window: it moved toward e0
        flags.append(f"pre_edge_extended(pre2 {p['pre2']:g} -> {p['pre2_used']:.1f} eV)")
    noise = _noise_sd(mu)
    if noise > 0 and step < 10 * noise:
        flags.append(f"low_edge_step(step/noise={step / noise:.1f})")
    tab = tabulated_edge(element, edge)
    if tab is not None and abs(e0 - tab) > 25:
        flags.append(f"e0_far_from_table({e0:.1f} vs {element} {edge} {tab:.1f} eV)")
    stab = edge_step_stability(energy, mu, e0, p["pre1"], p["pre2"], p["norm1"], p["norm2"], p["nnorm"])
    if stab["relative_change"] > max_step_change:
        flags.append(f"edge_step_unstable({100 * stab['relative_change']:.0f} %)")
    return flags


@dataclass
class NormalizeRequest:
    """One ingested scan to normalize, with its parameters and provenance settings."""

    raw_store: Path
    out: Path
    params: dict
    threads: int = 1
    mem_mb: int = 2000
    seed: int | None = None
    params_hash: str | None = None
    dashboard: bool = False
    scheduler: str = "threads"  # config dask.step_scheduler (stacks): threads or cluster

    def __post_init__(self):
        from xafsflow.campaign import kind_params

        self.group = st.open_store(self.raw_store)
        self.attrs = dict(self.group.attrs)
        self.params = kind_params(self.attrs["kind"], self.params)  # completed with the schema's defaults
        inprov = self.attrs.get(st.PROVENANCE_KEY, {})
        self.raw_inputs = inprov.get("inputs", {})
        self.warnings = list(inprov.get("warnings", []))
        self.source = next(iter(self.raw_inputs), str(self.raw_store))
        self.base = {k: self.attrs.get(k) for k in
                     ("scan_id", "kind", "format", "element", "edge", "pixel_size_um", "sheet_fields")}

    @property
    def keywords(self) -> dict:
        return normalize_keywords(self.params)

    def provenance(self, params: dict) -> dict:
        return st.provenance("normalize", [], params, self.seed, self.params_hash, self.warnings,
                             extra={"raw_inputs": self.raw_inputs})


def normalize_xmcd_pair(energy, mu_plus, mu_minus, keywords: dict):
    """Normalize an XMCD pair: E0 and edge step from the helicity average, a pre-edge line per helicity.

    Returns ``(average, norm_plus, norm_minus)``: the
    :class:`~xafsflow.xas.normalize.EdgeNormalization` of the average and both
    helicities over the average's edge step.
    """
    from xafsflow.xas.normalize import normalize_edge

    avg = normalize_edge(energy, 0.5 * (mu_plus + mu_minus), **keywords)
    fixed = dict(keywords, e0=float(avg.e0))
    rp = normalize_edge(energy, mu_plus, **fixed)
    rm = normalize_edge(energy, mu_minus, **fixed)
    step = float(avg.edge_step)
    return avg, (mu_plus - rp.pre_edge) / step, (mu_minus - rm.pre_edge) / step


def _spectrum_arrays(req: NormalizeRequest):
    if req.attrs.get("energy_error"):
        raise AnalysisInputError(
            f"not an absorption scan: {req.attrs['energy_error']}; normalization needs an energy axis", req.source)
    energy = req.group["energy"][...]
    mu = req.group["mu"][...]
    return energy, mu


def _write_spectrum_store(req: NormalizeRequest, energy, mu, res, extra_arrays: dict) -> None:
    flags = spectrum_flags(energy, mu, res, req.base["element"], req.base["edge"],
                           req.params["normalize"]["max_step_change"])
    req.warnings += list(res.params.get("clamp_warnings", []))  # windows moved to fit the data
    prov = req.provenance({"normalize": res.params})
    with st.atomic_store(req.out) as g:
        st.put_array(g, "energy", energy, ("energy",), attrs={"units": "eV"})
        st.put_array(g, "mu", mu, ("energy",))
        for name in ("pre_edge", "post_edge", "norm", "flat"):
            st.put_array(g, name, getattr(res, name), ("energy",))
        for name, (arr, attrs) in extra_arrays.items():
            st.put_array(g, name, arr, ("energy",), attrs=attrs)
        st.set_attrs(g, **req.base, e0=float(res.e0), edge_step=float(res.edge_step), flags=flags,
                     **{st.PROVENANCE_KEY: prov})


def _normalize_spectrum(req: NormalizeRequest) -> None:
    from xafsflow.xas.normalize import normalize_edge

    energy, mu = _spectrum_arrays(req)
    try:
        res = normalize_edge(energy, mu, **req.keywords)
    except AnalysisInputError as exc:
        raise AnalysisInputError(exc.reason, req.source) from None
    _write_spectrum_store(req, energy, mu, res, {})


def _normalize_xmcd(req: NormalizeRequest) -> None:
    energy, mu = _spectrum_arrays(req)
    mm = req.group["mu_minus"][...]
    try:
        res, n_plus, n_minus = normalize_xmcd_pair(energy, mu, mm, req.keywords)
    except AnalysisInputError as exc:
        raise AnalysisInputError(exc.reason, req.source) from None
    _write_spectrum_store(req, energy, mu, res, {
        "mu_minus": (mm, None),
        "norm_plus": (n_plus, None),
        "norm_minus": (n_minus, None),
        "xmcd": (n_plus - n_minus, {"definition": "norm_plus - norm_minus, both over the average's edge step"}),
    })


def _normalize_identity(req: NormalizeRequest) -> None:
    """Kind ``spectrum``: no edge, so ``norm`` is y as read (e0 and edge_step None, no flags)."""
    x = req.group["energy"][...]
    y = req.group["mu"][...]
    units = dict(req.group["energy"].attrs).get("units", "arbitrary")
    prov = req.provenance({"normalize": "identity (a spectrum has no edge: norm = y)"})
    with st.atomic_store(req.out) as g:
        st.put_array(g, "energy", x, ("energy",), attrs={"units": units})
        st.put_array(g, "mu", y, ("energy",))
        st.put_array(g, "norm", y, ("energy",), attrs={"definition": "y as read (identity)"})
        st.set_attrs(g, **req.base, e0=None, edge_step=None, flags=[], **{st.PROVENANCE_KEY: prov})


def _normalize_image(req: NormalizeRequest) -> None:
    img = req.group["image"][...]
    sd = float(img.std())
    if sd == 0:
        raise AnalysisInputError("domain image is constant; nothing to analyse", req.source)
    prov = req.provenance({"standardize": "zero mean, unit variance"})
    with st.atomic_store(req.out) as g:
        st.put_array(g, "image", img, ("y", "x"))
        st.put_array(g, "image_std", (img - img.mean()) / sd, ("y", "x"))
        st.set_attrs(g, **req.base, flags=[], **{st.PROVENANCE_KEY: prov})


def _normalize_stack(req: NormalizeRequest) -> None:
    import dask.array as da

    from xafsflow.distributed import runs_in_process, step_scheduler
    from xafsflow.imaging.pixels import normalize_stack_into, start_kernel_warmup

    energy = req.group["energy"][...]
    raw = req.group["mu"]
    # the kernel is loaded here while the graph is built, unless it runs in other processes (a cluster)
    warmup = (start_kernel_warmup(energy, req.keywords, raw.dtype, np.float32) if runs_in_process(req.scheduler)
              else None)
    ne, ny, nx = raw.shape
    chunks = raw.chunks
    mu = da.from_zarr(raw)  # float32 read as it is: the kernel computes in float64
    cube, plane = ("energy", "y", "x"), ("y", "x")
    # the store outside the scheduler: a failed run's workers (threads or processes) have all stopped before
    # the temporary store is removed, so none writes into it afterwards
    with st.atomic_store(req.out) as g:
        with step_scheduler(req.scheduler, req.threads, req.mem_mb, dashboard=req.dashboard):
            st.put_array(g, "energy", energy, ("energy",), attrs={"units": "eV"})
            norm = st.create_array(g, "norm", (ne, ny, nx), np.float32, cube, chunks)
            flat = st.create_array(g, "flat", (ne, ny, nx), np.float32, cube, chunks)
            # pixels without an edge (no sample) get NaN and a flag instead of failing the stack; blocks are
            # the raw store's chunks (E, rows, columns) and each task writes its own chunks of both cubes
            e0map, stepmap = normalize_stack_into(energy, mu, norm, flat, **req.keywords)
            st.put_array(g, "e0", e0map, plane, chunks=chunks[1:], attrs={"units": "eV"})
            st.put_array(g, "edge_step", stepmap, plane, chunks=chunks[1:])
            flags = []
            if np.any(stepmap <= 0):
                flags.append(f"nonpositive_edge_step({int(np.sum(stepmap <= 0))} pixels)")
            n_nan = int(np.sum(~np.isfinite(stepmap)))
            if n_nan == stepmap.size:
                raise AnalysisInputError("no pixel of the stack could be normalized (no positive edge step "
                                         "anywhere): check the normalization windows and the energies", req.source)
            if n_nan:
                flags.append(f"unnormalized_pixels({n_nan})")
            if warmup is not None:
                warmup.join()
            prov = req.provenance({"normalize": req.keywords, "chunks": list(chunks)})
            st.set_attrs(g, **req.base, e0=float(np.nanmedian(e0map)), edge_step=float(np.nanmedian(stepmap)),
                         flags=flags, **{st.PROVENANCE_KEY: prov})


NORMALIZE_BY_KIND = {
    "xanes": _normalize_spectrum,
    "exafs": _normalize_spectrum,
    "xmcd": _normalize_xmcd,
    "stack": _normalize_stack,
    "domain_image": _normalize_image,
    "spectrum": _normalize_identity,
}


def normalize(raw_store: str | Path, out: str | Path, params: dict, threads: int = 1, mem_mb: int = 2000,
              seed: int | None = None, params_hash: str | None = None, dashboard: bool = False,
              scheduler: str = "threads") -> Path:
    """Normalize an ingested scan into its scan store ``out``.

    ``params`` are the scan kind's analysis parameters (its ``normalize`` block);
    keys left out take the schema's defaults. ``scheduler`` (stacks): where the
    per-pixel graph runs, see :func:`xafsflow.distributed.step_scheduler`.
    """
    req = NormalizeRequest(Path(raw_store), Path(out), params, threads, mem_mb, seed, params_hash, dashboard,
                           scheduler)
    kind = req.attrs["kind"]
    if kind not in NORMALIZE_BY_KIND:
        raise ValueError(f"unknown kind {kind!r} (use {', '.join(NORMALIZE_BY_KIND)})")
    NORMALIZE_BY_KIND[kind](req)
    return Path(out)
