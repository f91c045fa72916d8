"""Zarr v3 product stores: atomic writes, named dimensions, provenance.

A store is written under ``<name>.zarr.tmp-<pid>`` and renamed into place only
when complete, so an interrupted job never leaves a store that looks finished.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

PROVENANCE_KEY = "xafsflow_provenance"


def sha256_file(path: str | Path, blocksize: int = 1 << 20) -> str:
    """sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(blocksize):
            h.update(chunk)
    return h.hexdigest()


def git_commit(start: str | Path | None = None) -> str | None:
    """Commit of the xafsflow checkout (or of ``start``), or None outside git."""
    where = Path(start) if start else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def provenance(
    step: str,
    inputs: list[str | Path] = (),
    params: dict | None = None,
    seed: int | None = None,
    config_hash: str | None = None,
    warnings: list[str] | None = None,
    extra: dict | None = None,
) -> dict:
    """The provenance record stored in every product's attributes."""
    from xafsflow import __version__

    return {
        "step": step,
        "xafsflow_version": __version__,
        "git_commit": git_commit(),
        "config_hash": config_hash,
        "inputs": {str(p): sha256_file(p) for p in inputs if Path(p).is_file()},
        "parameters": params or {},
        "seed": seed,
        "warnings": list(warnings or []),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
        # the batch job that made the product, when it ran under SLURM
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        **(extra or {}),
    }


def tmp_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process on this machine (a process we may not signal counts)."""
    if pid <= 0:  # os.kill(0, ...) would address our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:  # a pid too large for the platform cannot be running
        return False
    return True


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove ``<name>.tmp-<pid>`` / ``<name>.old-<pid>`` siblings of ``path`` left by dead writers.

    A writer killed (e.g. SIGKILL, out of memory) inside :func:`atomic_store`
    leaves its temporary store behind. Those whose ``pid`` is not a live
    process on this machine are removed; those of live processes are left
    alone, since the writer may still be running. A ``.old-<pid>`` is removed
    only while ``path`` itself exists: without it, the old store is the only
    complete copy left (the writer died between its two renames).

    Returns the paths removed.
    """
    path = Path(path)
    parent = path.parent
    pattern = re.compile(re.escape(path.name) + r"\.(tmp|old)-(\d+)")
    removed = []
    try:
        siblings = sorted(parent.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for sib in siblings:
        m = pattern.fullmatch(sib.name)
        if m is None or _pid_alive(int(m.group(2))):
            continue
        if m.group(1) == "old" and not path.exists():
            continue
        if sib.is_dir() and not sib.is_symlink():
            shutil.rmtree(sib, ignore_errors=True)
        else:
            sib.unlink(missing_ok=True)
        if not sib.exists() and not sib.is_symlink():
            removed.append(sib)
    return removed


def _unwritable_reason(parent: Path, exc: OSError) -> str:
    """A short reason why ``parent`` could not be created or written."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        for p in (parent, *parent.parents):
            if p.exists() and not p.is_dir():
                return f"{p} is a file, not a folder"
    what = exc.strerror or type(exc).__name__
    where = exc.filename if exc.filename is not None else parent
    return f"{what}: {where}"


def check_writable(*paths: str | Path) -> None:
    """Make sure every output (store folder, TSV, PNG) can be written, before any work is done.

    For each path, its parent folder is created if missing and a probe file is
    created in it and deleted again. Real operations are tried rather than
    ``os.access``, which says yes to root even on a read-only filesystem.

    Raises
    ------
    xafsflow.errors.InputError
        Naming the first path that cannot be written, and why.
    """
    from xafsflow.errors import InputError

    for path in paths:
        parent = Path(path).parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".xafsflow-write-probe-", dir=parent)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            reason = " ".join(_unwritable_reason(parent, exc).split())  # one line
            raise InputError(
                f"cannot write the output here: {reason}; "
                "choose another --out or fix the folder's permissions",
                path,
            ) from exc


@contextmanager
def atomic_store(path: str | Path):
    """Open a new Zarr v3 group at a temporary path; rename to ``path`` on success.

    On an exception the temporary store is removed and ``path`` is left untouched.
    An existing store at ``path`` is replaced only once the new one is complete.
    Temporaries of earlier writers that died (see :func:`remove_stale_temporaries`)
    are removed first.
    """
    import zarr

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = tmp_path(path)
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        group = zarr.open_group(zarr.storage.LocalStore(str(tmp)), mode="w", zarr_format=3)
        yield group
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        old = path.with_name(f"{path.name}.old-{os.getpid()}")
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(path)


def _compressors():
    from zarr.codecs import BloscCodec

    return [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")]


def put_array(group, name: str, data, dims: tuple[str, ...], chunks=None, attrs: dict | None = None):
    """Write a NumPy array into ``group`` with named dimensions (and units etc. in ``attrs``)."""
    data = np.asarray(data)
    arr = group.create_array(
        name,
        shape=data.shape,
        dtype=data.dtype,
        chunks=chunks or (data.shape if data.ndim else ()),
        dimension_names=dims,
        compressors=_compressors(),
        fill_value=0,
    )
    arr[...] = data
    if attrs:
        arr.attrs.update(_jsonable(attrs))
    return arr


def create_array(group, name: str, shape, dtype, dims, chunks, attrs: dict | None = None):
    """Create an empty array (to be filled chunk by chunk, e.g. from Dask)."""
    arr = group.create_array(
        name, shape=tuple(shape), dtype=dtype, chunks=tuple(chunks), dimension_names=dims,
        compressors=_compressors(), fill_value=0,
    )
    if attrs:
        arr.attrs.update(_jsonable(attrs))
    return arr


def _jsonable(obj):
    """Convert NumPy scalars/arrays (recursively) to JSON-serialisable values."""
    return json.loads(json.dumps(obj, default=_default))


def _default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def set_attrs(group, **attrs) -> None:
    group.attrs.update(_jsonable(attrs))


def open_store(path: str | Path):
    """Open a finished store read-only; a clear InputError if it is not one."""
    import zarr

    from xafsflow.errors import InputError

    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise InputError("not a xafsflow Zarr store (no zarr.json)", path)
    return zarr.open_group(zarr.storage.LocalStore(str(path), read_only=True), mode="r")


def read_provenance(path: str | Path) -> dict:
    """The provenance record of a store."""
    from xafsflow.errors import InputError

    attrs = dict(open_store(path).attrs)
    if PROVENANCE_KEY not in attrs:
        raise InputError("store has no xafsflow provenance", path)
    return attrs[PROVENANCE_KEY]
