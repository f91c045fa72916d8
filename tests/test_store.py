"""Zarr v3 stores: atomic writes, provenance, interrupted jobs; random streams."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from xafsflow.errors import InputError
from xafsflow.io import store as st
from xafsflow.seeds import rng, stable_key


def test_atomic_store_roundtrip_with_named_dims(tmp_path):
    out = tmp_path / "a.zarr"
    data = np.arange(12.0).reshape(3, 4)
    with st.atomic_store(out) as g:
        st.put_array(g, "mu", data, ("energy", "pixel"), attrs={"units": "1"})
        assert not out.exists()  # only the temporary store exists while writing
    g = st.open_store(out)
    np.testing.assert_array_equal(g["mu"][...], data)
    assert tuple(g["mu"].metadata.dimension_names) == ("energy", "pixel")
    assert json.loads((out / "zarr.json").read_text())["zarr_format"] == 3
    assert not list(tmp_path.glob("*.tmp-*"))


def test_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "b.zarr"
    with pytest.raises(RuntimeError):
        with st.atomic_store(out) as g:
            st.put_array(g, "x", np.ones(3), ("i",))
            raise RuntimeError("boom")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_replacing_keeps_old_store_until_new_is_complete(tmp_path):
    out = tmp_path / "c.zarr"
    with st.atomic_store(out) as g:
        st.put_array(g, "x", np.ones(3), ("i",))
    with pytest.raises(RuntimeError):
        with st.atomic_store(out) as g:
            st.put_array(g, "x", np.zeros(3), ("i",))
            raise RuntimeError("interrupted")
    np.testing.assert_array_equal(st.open_store(out)["x"][...], np.ones(3))
    with st.atomic_store(out) as g:
        st.put_array(g, "x", np.zeros(3), ("i",))
    np.testing.assert_array_equal(st.open_store(out)["x"][...], np.zeros(3))


def test_killed_job_never_leaves_a_finished_looking_store(tmp_path):
    out = tmp_path / "killed.zarr"
    code = textwrap.dedent(f"""
        import os, signal, numpy as np
        from xafsflow.io import store as st
        with st.atomic_store({str(out)!r}) as g:
            st.put_array(g, "x", np.ones(1000), ("i",))
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    assert [p.name.startswith("killed.zarr.tmp-") for p in tmp_path.iterdir()] == [True]


def test_provenance_records_inputs_and_parameters(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_bytes(b"some bytes\n")
    prov = st.provenance("ingest", [raw], {"a": 1}, seed=5, config_hash="abc", warnings=["w1"])
    assert prov["inputs"][str(raw)] == hashlib.sha256(b"some bytes\n").hexdigest()
    assert prov["parameters"] == {"a": 1} and prov["seed"] == 5 and prov["warnings"] == ["w1"]
    from xafsflow import __version__

    assert prov["xafsflow_version"] == __version__
    out = tmp_path / "p.zarr"
    with st.atomic_store(out) as g:
        st.set_attrs(g, **{st.PROVENANCE_KEY: prov})
    assert st.read_provenance(out) == json.loads(json.dumps(prov))


def test_open_store_refuses_non_store(tmp_path):
    with pytest.raises(InputError, match="not a xafsflow Zarr store"):
        st.open_store(tmp_path)


def test_stable_key_ignores_python_hash_seed():
    code = "from xafsflow.seeds import stable_key; print(stable_key('scan_1', 'posterior', 3, 0))"
    outs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONHASHSEED=str(s))).stdout.strip()
        for s in (0, 1, 12345)
    }
    assert outs == {str(stable_key("scan_1", "posterior", 3, 0))}


def test_streams_depend_on_key_not_on_order():
    a1 = rng(7, "scan_a", "x").random(4)
    _ = rng(7, "scan_b", "x").random(4)
    a2 = rng(7, "scan_a", "x").random(4)
    np.testing.assert_array_equal(a1, a2)
    assert not np.array_equal(a1, rng(7, "scan_b", "x").random(4))
    assert not np.array_equal(a1, rng(8, "scan_a", "x").random(4))
