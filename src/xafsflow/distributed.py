"""How a step gets its Dask client.

Library functions take NumPy or Dask arrays and never create a cluster; only
the CLI steps call :func:`client`. With ``XAFSFLOW_SCHEDULER_FILE`` or
``DASK_SCHEDULER_ADDRESS`` set (a scheduler spanning several nodes), the step
connects there; otherwise it starts a ``LocalCluster`` sized from the rule's
threads and memory. :func:`step_scheduler` lets a step run its graph on
Dask's threaded scheduler in its own process instead (config
``dask.step_scheduler``).
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


#: Values of the config key ``dask.step_scheduler``.
STEP_SCHEDULERS = ("threads", "cluster")


def runs_in_process(scheduler: str = "threads") -> bool:
    """Whether :func:`step_scheduler` runs a step's tasks in this process (``threads`` and no scheduler
    given in the environment by ``XAFSFLOW_SCHEDULER_FILE`` or ``DASK_SCHEDULER_ADDRESS``)."""
    external = os.environ.get("XAFSFLOW_SCHEDULER_FILE") or os.environ.get("DASK_SCHEDULER_ADDRESS")
    return scheduler == "threads" and not external


@contextmanager
def step_scheduler(scheduler: str = "threads", threads: int = 1, mem_mb: int = 2000, dashboard: bool = False):
    """Where a step's Dask graph runs: ``threads`` (in this process) or ``cluster`` (:func:`client`).

    ``threads``: Dask's threaded scheduler with ``threads`` threads, in the
    step's own process. No cluster to start (a local two-process cluster costs
    seconds and moves every chunk between processes); memory stays bounded
    because the graphs of the steps that use this (per-pixel normalization,
    chunk in, chunk out to Zarr) hold only the chunks in flight, about
    ``threads`` chunks at a time, but no worker memory limit is enforced.
    With a scheduler given in the environment (``XAFSFLOW_SCHEDULER_FILE``
    or ``DASK_SCHEDULER_ADDRESS``) that scheduler is used whatever this says.
    ``cluster``: :func:`client` (a local cluster with an explicit per-worker
    memory limit, spilling to scratch).
    """
    import dask

    if scheduler not in STEP_SCHEDULERS:
        raise ValueError(f"unknown step scheduler {scheduler!r} (use {' or '.join(STEP_SCHEDULERS)})")
    if not runs_in_process(scheduler):
        with client(threads, mem_mb, dashboard=dashboard) as c:
            yield c
        return
    import dask.threaded
    from concurrent.futures import ThreadPoolExecutor

    # the threaded scheduler's function itself, not the name "threads": given a name, dask imports
    # distributed to look for a default client (about 0.6 s per process). The step's own pool is shut
    # down, waiting for running tasks, before the context exits: when one task fails, the others still
    # running (which may write into the step's temporary store) finish before the store is cleaned up.
    n = max(1, int(threads))
    # dask's own executor class (it carries context variables into the tasks), as its default pools
    pool = getattr(dask.threaded, "ContextAwareThreadPoolExecutor", ThreadPoolExecutor)(n)
    try:
        with dask.config.set(scheduler=dask.threaded.get, num_workers=n, pool=pool):
            yield None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
