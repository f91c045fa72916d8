"""How a step gets its Dask client.

Library functions take NumPy or Dask arrays and never create a cluster; only
the CLI steps call :func:`client`. With ``XAFSFLOW_SCHEDULER_FILE`` or
``DASK_SCHEDULER_ADDRESS`` set (a scheduler spanning several nodes), the step
connects there; otherwise it starts a ``LocalCluster`` sized from the rule's
threads and memory.
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager


def scratch_dir() -> str:
    """Node-local scratch for worker spill files: $XAFSFLOW_SCRATCH, $TMPDIR or /tmp."""
    return os.environ.get("XAFSFLOW_SCRATCH") or os.environ.get("TMPDIR") or tempfile.gettempdir()


def _announce_dashboard(c) -> None:
    print(f"xafsflow: Dask dashboard at {c.dashboard_link}", file=sys.stderr, flush=True)


@contextmanager
def client(threads: int = 1, mem_mb: int = 2000, dashboard: bool = False):
    """A Dask ``distributed.Client`` for one step, closed (with its cluster) on exit.

    Parameters
    ----------
    threads : int
        Worker processes for a local cluster (one thread each, so numba and
        BLAS do not oversubscribe the rule's cores).
    mem_mb : int
        Memory the rule was given (MB), split evenly over the workers and set
        as their explicit memory limit, so Dask spills rather than the job
        being killed by the scheduler.
    dashboard : bool
        Serve the Dask dashboard on 127.0.0.1 at a free port and print its
        link to stderr. Off by default: no dashboard pages are served. (The
        scheduler always runs a small HTTP server for health and metrics; it
        is bound to 127.0.0.1 at a free port too, never to the shared 8787,
        so many steps on one node do not collide.)
    """
    from distributed import Client, LocalCluster

    scheduler_file = os.environ.get("XAFSFLOW_SCHEDULER_FILE")
    address = os.environ.get("DASK_SCHEDULER_ADDRESS")
    if scheduler_file or address:
        c = Client(scheduler_file=scheduler_file) if scheduler_file else Client(address)
        try:
            if dashboard:  # the remote scheduler's own dashboard, if it has one
                _announce_dashboard(c)
            yield c
        finally:
            c.close()
        return
    threads = max(1, int(threads))
    per_worker = max(256, int(mem_mb) // threads)
    cluster = LocalCluster(
        n_workers=threads,
        threads_per_worker=1,
        processes=True,
        memory_limit=f"{per_worker}MB",
        local_directory=scratch_dir(),
        # dashboard_address=None would still make the scheduler's HTTP server
        # try port 8787 first; an explicit address with port 0 takes a free port.
        dashboard_address="127.0.0.1:0",
        worker_dashboard_address=None,
        scheduler_kwargs={"dashboard": bool(dashboard)},
        silence_logs=40,
    )
    try:
        c = Client(cluster)
    except BaseException:
        cluster.close()
        raise
    try:
        if dashboard:
            _announce_dashboard(c)
        yield c
    finally:
        c.close()
        cluster.close()
