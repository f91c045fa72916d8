"""Shared fixtures: repository paths, the real data in ../shared/data, Snakemake runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    """``../shared/data`` beside the checkout (or $XAFSFLOW_SHARED_DATA)."""
    env = os.environ.get("XAFSFLOW_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared() -> Path:
    d = shared_data()
    if not (d / "xdi").is_dir():
        pytest.fail(f"real test data not found at {d}; set XAFSFLOW_SHARED_DATA")
    return d


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A working directory laid out like a checkout: config/ and tests/ linked, ../shared beside it."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "config").symlink_to(REPO / "config")
    (work / "tests").symlink_to(REPO / "tests")
    (tmp_path / "shared").symlink_to(shared_data().parent)
    return work


def kill_at_first_checkpoint(cmd: list[str], checkpoint_dir: Path, timeout: float = 120.0) -> None:
    """Start ``cmd``, wait until a chain checkpoint (``*.npz``) appears under ``checkpoint_dir``, kill it."""
    import time

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and not list(Path(checkpoint_dir).rglob("*.npz")):
        time.sleep(0.05)
    found = bool(list(Path(checkpoint_dir).rglob("*.npz")))
    proc.kill()
    proc.wait()
    assert found, "no checkpoint appeared"


def run_snakemake(workdir: Path, *args: str, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run Snakemake (this interpreter's) on the repository's Snakefile in ``workdir``."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    full_env = dict(os.environ, **(env or {}))
    full_env.setdefault("NUMBA_CACHE_DIR", str(workdir / ".numba_cache"))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=workdir)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """The demo campaign's raw files, simulated once per session."""
    from xafsflow.simulate.demo import write_demo

    d = tmp_path_factory.mktemp("demo")
    write_demo(d, seed=20261127)
    return d
