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


def _dead_pid() -> int:
    """The pid of a child that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_next_atomic_store_removes_temporaries_of_killed_writers(tmp_path):
    out = tmp_path / "killed.zarr"
    code = textwrap.dedent(f"""
        import sys, time, numpy as np
        from xafsflow.io import store as st
        with st.atomic_store({str(out)!r}) as g:
            st.put_array(g, "x", np.ones(1000), ("i",))
            print("written", flush=True)
            time.sleep(120)
    """)
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        assert writer.stdout.readline().strip() == "written"
        writer.send_signal(signal.SIGKILL)
        assert writer.wait(timeout=30) == -signal.SIGKILL
        stale = tmp_path / f"killed.zarr.tmp-{writer.pid}"
        assert (stale / "x" / "zarr.json").is_file()
        # a writer that is still alive keeps its temporary store
        live = tmp_path / f"killed.zarr.tmp-{sleeper.pid}"
        live.mkdir()
        (live / "zarr.json").write_text("{}")

        with st.atomic_store(out) as g:
            st.put_array(g, "x", np.zeros(3), ("i",))

        np.testing.assert_array_equal(st.open_store(out)["x"][...], np.zeros(3))
        assert not stale.exists()
        assert sorted(p.name for p in tmp_path.glob("*.tmp-*")) == [live.name]
        assert (live / "zarr.json").is_file()
    finally:
        for proc in (writer, sleeper):
            proc.kill()
            proc.wait()
        writer.stdout.close()


def test_remove_stale_temporaries_only_dead_pids_and_keeps_the_last_complete_copy(tmp_path):
    out = tmp_path / "s.zarr"
    dead = _dead_pid()
    names = [f"s.zarr.tmp-{dead}", f"s.zarr.old-{dead}", f"s.zarr.tmp-{os.getpid()}",
             "s.zarr.tmp-notapid", f"other.zarr.tmp-{dead}"]
    for name in names:
        (tmp_path / name).mkdir()
    (tmp_path / f"s.zarr.tmp-{dead}" / "zarr.json").write_text("{}")
    # without s.zarr, the .old store is the only complete copy left: kept
    assert st.remove_stale_temporaries(out) == [tmp_path / f"s.zarr.tmp-{dead}"]
    assert (tmp_path / f"s.zarr.old-{dead}").is_dir()
    out.mkdir()
    assert st.remove_stale_temporaries(out) == [tmp_path / f"s.zarr.old-{dead}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"s.zarr.tmp-{os.getpid()}", "s.zarr.tmp-notapid", f"other.zarr.tmp-{dead}", "s.zarr"])
    assert st.remove_stale_temporaries(tmp_path / "missing" / "x.zarr") == []


def test_check_writable_creates_parents(tmp_path):
    outs = [tmp_path / "a" / "b" / "x.zarr", tmp_path / "t" / "summary.tsv", tmp_path / "f.png"]
    st.check_writable(*outs)
    for p in outs:
        assert p.parent.is_dir() and not p.exists()
    assert not list(tmp_path.rglob("*probe*"))  # the probe files are gone


@pytest.mark.parametrize("below", ["", "sub"])
def test_check_writable_refuses_a_file_as_folder(tmp_path, below):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder\n")
    out = blocker / below / "x.zarr" if below else blocker / "x.zarr"
    with pytest.raises(InputError) as err:
        st.check_writable(tmp_path / "fine.tsv", out)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{out}: cannot write the output here: {blocker} is a file, not a folder;")
    assert msg.endswith("choose another --out or fix the folder's permissions")
    assert err.value.path == str(out)
    assert blocker.read_text() == "not a folder\n"


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
