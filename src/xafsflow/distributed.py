"""How a step gets its Dask client.

Library functions take NumPy or Dask arrays and never create a cluster; only
the CLI steps call :func:`client`. With ``XAFSFLOW_SCHEDULER_FILE`` or
``DASK_SCHEDULER_ADDRESS`` set (a scheduler spanning several nodes), the step
connects there; otherwise it starts a ``LocalCluster`` sized from the rule's
threads and memory.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager


def scratch_dir() -> str:
    """Node-local scratch for worker spill files: $XAFSFLOW_SCRATCH, $TMPDIR or /tmp."""
    return os.environ.get("XAFSFLOW_SCRATCH") or os.environ.get("TMPDIR") or tempfile.gettempdir()


@contextmanager
def client(threads: int = 1, mem_mb: int = 2000):
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
    """
    from distributed import Client, LocalCluster

    scheduler_file = os.environ.get("XAFSFLOW_SCHEDULER_FILE")
    address = os.environ.get("DASK_SCHEDULER_ADDRESS")
    if scheduler_file:
        c = Client(scheduler_file=scheduler_file)
        try:
            yield c
        finally:
            c.close()
        return
    if address:
        c = Client(address)
        try:
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
        dashboard_address=None,
        silence_logs=40,
    )
    c = Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()
