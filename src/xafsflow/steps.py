"""The ingest and normalize steps: raw files -> ingested store -> normalized scan store.

These are the functions the CLI calls; each reads only its inputs and writes
only its output store (atomically).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from xafsflow.errors import AnalysisInputError, FileFormatError
from xafsflow.io import store as st

SPECTRUM_KINDS = ("xanes", "exafs", "xmcd")


# ----------------------------------------------------------------------------- ingest
def _read_table(path: str, fmt: str):
    """(labels, data, metadata, warnings, energy-or-None, energy_error-or-None)."""
    if fmt == "xdi":
        from xafsflow.io.xdi import energy_axis, read_xdi

        x = read_xdi(path)
        warnings = list(x.warnings)
        try:
            energy, ew = energy_axis(x)
            warnings += list(ew)
            err = None
        except AnalysisInputError as exc:
            energy, err = None, exc.reason
        return x.column_labels, x.data, x.metadata(), warnings, energy, err
    from xafsflow.io.columns import read_columns

    c = read_columns(path)
    return c.labels, c.data, {"header": c.header, "column_labels": c.labels}, list(c.warnings), None, None


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


def ingest_spectrum(paths: list[str], fmt: str, fields: dict) -> dict:
    """Read one spectrum (or an XMCD pair) into arrays and metadata.

    Returns a dict with ``energy`` (eV), ``mu`` (and ``mu_minus`` for a pair),
    ``metadata``, ``warnings`` and ``energy_error`` (why there is no energy axis,
    for a file that is valid but not an absorption scan).
    """
    from xafsflow.io.columns import absorption, pick_column

    mapping = {k: fields[k] for k in ("energy", "i0", "itrans", "ifluor", "mu", "mu_minus") if k in fields}
    out: dict = {"metadata": {}, "warnings": [], "energy_error": None}
    mus = []
    energies = []
    for idx, p in enumerate(paths):
        labels, data, meta, warns, energy, err = _read_table(p, fmt)
        out["metadata"][str(p)] = meta
        out["warnings"] += [f"{Path(p).name}: {w}" for w in warns]
        if "energy" in mapping:
            energy = pick_column(labels, data, mapping["energy"], p, "energy")
            err = None
        if energy is None:
            out["energy_error"] = err or f"no energy column (columns: {', '.join(labels)}); name it in the sheet"
            out["labels"] = list(labels)
            out["table"] = data
            return out
        mu, how = absorption(labels, data, mapping, p)
        out.setdefault("mu_from", []).append(how)
        if idx == 0 and len(paths) == 1 and "mu_minus" in mapping:
            mus.append(mu)
            mus.append(pick_column(labels, data, mapping["mu_minus"], p, "mu_minus"))
            energies += [energy, energy]
        else:
            mus.append(mu)
            energies.append(energy)
    e0 = np.asarray(energies[0], dtype=np.float64)
    e0, arrs, w = _increasing(e0, [mus[0]] + ([mus[1]] if len(mus) > 1 and len(paths) == 1 else []), paths[0])
    out["warnings"] += w
    out["energy"] = e0
    out["mu"] = arrs[0]
    if len(mus) > 1:
        if len(paths) == 1:
            out["mu_minus"] = arrs[1]
        else:
            e1, (m1,), w1 = _increasing(np.asarray(energies[1], float), [mus[1]], paths[1])
            out["warnings"] += w1
            if e1.shape == e0.shape and np.allclose(e1, e0, atol=1e-3):
                out["mu_minus"] = m1
            else:
                out["warnings"].append("helicity scans on different energy grids: minus interpolated onto plus")
                out["mu_minus"] = np.interp(e0, e1, m1)
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


def ingest(
    scan_id: str,
    kind: str,
    fmt: str,
    paths: list[str],
    out: str | Path,
    fields: dict | None = None,
    energies: str | None = None,
    chunk_pixels: int = 4096,
    seed: int | None = None,
    config_hash: str | None = None,
) -> Path:
    """Read raw file(s) of one scan and write its ingested store ``out``.

    Nothing is written when the input is malformed (an :class:`InputError` is raised).
    """
    fields = dict(fields or {})
    inputs = list(paths) + ([energies] if energies else [])
    attrs = {"scan_id": scan_id, "kind": kind, "format": fmt, "sheet_fields": fields}
    if kind in SPECTRUM_KINDS:
        r = ingest_spectrum(paths, fmt, fields)
        warnings = r["warnings"]
        el, edge = _element_edge(r["metadata"], fields, warnings)
        attrs.update(element=el, edge=edge, file_metadata=r["metadata"], energy_error=r["energy_error"])
        prov = st.provenance("ingest", inputs, {"fields": fields}, seed, config_hash, warnings)
        with st.atomic_store(out) as g:
            if r["energy_error"]:
                st.put_array(g, "table", r["table"], ("point", "column"))
                attrs["table_labels"] = r["labels"]
            else:
                st.put_array(g, "energy", r["energy"], ("energy",), attrs={"units": "eV"})
                st.put_array(g, "mu", r["mu"], ("energy",), attrs={"how": r["mu_from"][0]})
                if "mu_minus" in r:
                    st.put_array(g, "mu_minus", r["mu_minus"], ("energy",))
            st.set_attrs(g, **attrs, **{st.PROVENANCE_KEY: prov})
        return Path(out)
    if kind == "stack":
        return _ingest_stack(scan_id, fmt, paths[0], out, fields, energies, chunk_pixels, attrs, inputs, seed, config_hash)
    if kind == "domain_image":
        from xafsflow.io.stacks import read_image

        img, meta = read_image(paths[0])
        warnings = []
        px = fields.get("pixel_size") or meta.get("pixel_size_from_file")
        if px is None:
            warnings.append("no pixel size in the sheet or the file; lengths are in pixels")
        attrs.update(pixel_size_um=px, file_metadata=meta)
        prov = st.provenance("ingest", inputs, {"fields": fields}, seed, config_hash, warnings)
        with st.atomic_store(out) as g:
            st.put_array(g, "image", img, ("y", "x"))
            st.set_attrs(g, **attrs, **{st.PROVENANCE_KEY: prov})
        return Path(out)
    raise ValueError(f"unknown kind {kind!r}")


def _ingest_stack(scan_id, fmt, path, out, fields, energies_file, chunk_pixels, attrs, inputs, seed, config_hash):
    import dask.array as da

    from xafsflow.io import stacks

    from xafsflow.distributed import scratch_dir

    closer = None
    if fmt == "tiff_stack":
        energies = stacks.read_energies(energies_file)
        data, meta, closer = stacks.open_tiff_stack(path, energies, chunk_pixels, scratch_dir())
        chunks = data.chunksize
    else:
        data, energies, meta, closer = stacks.open_hdf5_stack(path, fields["dataset"], fields.get("energy"),
                                                              chunk_pixels)
        chunks = data.chunksize
    try:
        warnings: list[str] = []
        order = np.argsort(energies)
        if np.any(np.diff(energies[order]) <= 0):
            raise FileFormatError("stack energies repeat; each frame needs its own energy", energies_file or path)
        if not np.all(order == np.arange(energies.size)):
            warnings.append("stack frames were not in increasing energy; reordered")
            data = data[order].rechunk(chunks)
            energies = energies[order]
        data = data.astype(np.float32)
        attrs.update(file_metadata=meta, pixel_size_um=fields.get("pixel_size"))
        prov = st.provenance("ingest", inputs, {"fields": fields, "chunks": list(chunks)}, seed, config_hash, warnings)
        with st.atomic_store(out) as g:
            st.put_array(g, "energy", energies, ("energy",), attrs={"units": "eV"})
            target = st.create_array(g, "mu", data.shape, np.float32, ("energy", "y", "x"), chunks)
            da.store(data, target, lock=False, compute=True)
            st.set_attrs(g, **attrs, **{st.PROVENANCE_KEY: prov})
    finally:
        if closer is not None:
            closer.close()
    return Path(out)


# -------------------------------------------------------------------------- normalize
def _norm_params(params: dict) -> dict:
    p = dict(params.get("normalize", {}))
    return {k: p[k] for k in ("e0", "pre1", "pre2", "norm1", "norm2", "nnorm", "smooth_ev") if k in p}


def _quality(energy, mu, e0, step, element, edge, pre1, pre2) -> list[str]:
    """Quality flags of one normalized spectrum (documented in the README)."""
    flags = []
    npre = int(np.sum((energy >= e0 + pre1) & (energy <= e0 + pre2)))
    if npre < 10:
        flags.append(f"short_pre_edge({npre} points)")
    resid = np.diff(mu, 2) / math.sqrt(6.0)  # white noise sd estimate from second differences
    noise = float(np.median(np.abs(resid)) / 0.6745) if resid.size else 0.0
    if noise > 0 and step < 10 * noise:
        flags.append(f"low_edge_step(step/noise={step / noise:.1f})")
    if element and edge:
        try:
            from xraydb import xray_edge

            tab = float(xray_edge(element, edge).energy)
            if abs(e0 - tab) > 25:
                flags.append(f"e0_far_from_table({e0:.1f} vs {element} {edge} {tab:.1f} eV)")
        except Exception:  # noqa: BLE001 - unknown element/edge: no flag
            pass
    return flags


def normalize(raw_store: str | Path, out: str | Path, params: dict, threads: int = 1, mem_mb: int = 2000,
              seed: int | None = None, config_hash: str | None = None) -> Path:
    """Normalize an ingested scan into its scan store ``out``."""
    from xafsflow.xas.normalize import normalize_edge

    g_in = st.open_store(raw_store)
    attrs = dict(g_in.attrs)
    kind = attrs["kind"]
    inprov = attrs.get(st.PROVENANCE_KEY, {})
    base = {k: attrs.get(k) for k in ("scan_id", "kind", "format", "element", "edge", "pixel_size_um", "sheet_fields")}
    warnings = list(inprov.get("warnings", []))
    npar = _norm_params(params)
    inputs_sha = inprov.get("inputs", {})
    if kind in SPECTRUM_KINDS:
        if attrs.get("energy_error"):
            raise AnalysisInputError(
                f"not an absorption scan: {attrs['energy_error']}; normalization needs an energy axis",
                next(iter(inputs_sha), raw_store),
            )
        energy = g_in["energy"][...]
        mu = g_in["mu"][...]
        src = next(iter(inputs_sha), str(raw_store))
        try:
            if kind == "xmcd":
                mm = g_in["mu_minus"][...]
                avg = normalize_edge(energy, 0.5 * (mu + mm), **npar)
                fixed = dict(npar, e0=float(avg.e0))
                rp = normalize_edge(energy, mu, **fixed)
                rm = normalize_edge(energy, mm, **fixed)
                res = avg
            else:
                res = normalize_edge(energy, mu, **npar)
        except AnalysisInputError as exc:
            raise AnalysisInputError(exc.reason, src) from None
        e0, step = float(res.e0), float(res.edge_step)
        flags = _quality(energy, mu, e0, step, base["element"], base["edge"],
                         res.params.get("pre1", -150), res.params.get("pre2", -30))
        prov = st.provenance("normalize", [], {"normalize": res.params}, seed, config_hash, warnings,
                             extra={"raw_inputs": inputs_sha})
        with st.atomic_store(out) as g:
            st.put_array(g, "energy", energy, ("energy",), attrs={"units": "eV"})
            st.put_array(g, "mu", mu, ("energy",))
            st.put_array(g, "pre_edge", res.pre_edge, ("energy",))
            st.put_array(g, "post_edge", res.post_edge, ("energy",))
            st.put_array(g, "norm", res.norm, ("energy",))
            st.put_array(g, "flat", res.flat, ("energy",))
            if kind == "xmcd":
                n_plus = (mu - rp.pre_edge) / step
                n_minus = (mm - rm.pre_edge) / step
                st.put_array(g, "mu_minus", mm, ("energy",))
                st.put_array(g, "norm_plus", n_plus, ("energy",))
                st.put_array(g, "norm_minus", n_minus, ("energy",))
                st.put_array(g, "xmcd", n_plus - n_minus, ("energy",),
                             attrs={"definition": "norm_plus - norm_minus, both over the average's edge step"})
            st.set_attrs(g, **base, e0=e0, edge_step=step, flags=flags, **{st.PROVENANCE_KEY: prov})
        return Path(out)
    if kind == "stack":
        return _normalize_stack(g_in, base, out, npar, threads, mem_mb, warnings, inputs_sha, seed, config_hash)
    if kind == "domain_image":
        img = g_in["image"][...]
        sd = float(img.std())
        if sd == 0:
            raise AnalysisInputError("domain image is constant; nothing to analyse",
                                     next(iter(inputs_sha), raw_store))
        prov = st.provenance("normalize", [], {"standardize": "zero mean, unit variance"}, seed, config_hash,
                             warnings, extra={"raw_inputs": inputs_sha})
        with st.atomic_store(out) as g:
            st.put_array(g, "image", img, ("y", "x"))
            st.put_array(g, "image_std", (img - img.mean()) / sd, ("y", "x"))
            st.set_attrs(g, **base, flags=[], **{st.PROVENANCE_KEY: prov})
        return Path(out)
    raise ValueError(f"unknown kind {kind!r}")


def _normalize_stack(g_in, base, out, npar, threads, mem_mb, warnings, inputs_sha, seed, config_hash):
    import dask.array as da

    from xafsflow.distributed import client
    from xafsflow.xas.normalize import normalize_stack

    energy = g_in["energy"][...]
    raw = g_in["mu"]
    ne, ny, nx = raw.shape
    chunks = raw.chunks
    mu = da.from_zarr(raw).astype(np.float64)
    flat_mu = mu.reshape(ne, ny * nx)  # row-aligned chunks: reshape keeps one chunk per block
    with client(threads, mem_mb):
        res = normalize_stack(energy, flat_mu, **npar)
        with st.atomic_store(out) as g:
            st.put_array(g, "energy", energy, ("energy",), attrs={"units": "eV"})
            targets = {
                "norm": st.create_array(g, "norm", (ne, ny, nx), np.float32, ("energy", "y", "x"), chunks),
                "flat": st.create_array(g, "flat", (ne, ny, nx), np.float32, ("energy", "y", "x"), chunks),
                "e0": st.create_array(g, "e0", (ny, nx), np.float64, ("y", "x"), chunks[1:], {"units": "eV"}),
                "edge_step": st.create_array(g, "edge_step", (ny, nx), np.float64, ("y", "x"), chunks[1:]),
            }
            sources = [
                res["norm"].reshape(ne, ny, nx).astype(np.float32).rechunk(chunks),
                res["flat"].reshape(ne, ny, nx).astype(np.float32).rechunk(chunks),
                res["e0"].reshape(ny, nx).rechunk(chunks[1:]),
                res["edge_step"].reshape(ny, nx).rechunk(chunks[1:]),
            ]
            da.store(sources, list(targets.values()), lock=False, compute=True)
            e0map = targets["e0"][...]
            stepmap = targets["edge_step"][...]
            flags = []
            if np.any(stepmap <= 0):
                flags.append(f"nonpositive_edge_step({int(np.sum(stepmap <= 0))} pixels)")
            prov = st.provenance("normalize", [], {"normalize": npar, "chunks": list(chunks)}, seed, config_hash,
                                 warnings, extra={"raw_inputs": inputs_sha})
            st.set_attrs(g, **base, e0=float(np.median(e0map)), edge_step=float(np.median(stepmap)),
                         flags=flags, **{st.PROVENANCE_KEY: prov})
    return Path(out)
