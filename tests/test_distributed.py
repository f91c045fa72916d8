"""distributed.client: local clusters never claim the shared dashboard port 8787."""

from __future__ import annotations

import urllib.error
import urllib.request
import warnings

import pytest

from xafsflow.distributed import client


@pytest.fixture(autouse=True)
def _local_cluster(monkeypatch):
    monkeypatch.delenv("XAFSFLOW_SCHEDULER_FILE", raising=False)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)


def _get_status(c) -> int:
    """HTTP status of the scheduler's /status page (the dashboard's front page)."""
    server = c.cluster.scheduler.http_server
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{server.port}/status", timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def test_two_local_clients_at_once_without_port_8787_warning(capfd):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with client(1, 500) as a, client(1, 500) as b:
            assert a.submit(sum, [1, 2]).result() == 3
            assert b.submit(sum, [3, 4]).result() == 7
            for c in (a, b):
                server = c.cluster.scheduler.http_server
                assert server.address == "127.0.0.1" and server.port != 8787
                assert _get_status(c) == 404  # no dashboard pages served
    assert not [w for w in caught if "8787" in str(w.message)]
    assert "8787" not in capfd.readouterr().err


def test_dashboard_on_is_local_on_a_free_port_and_announced_once(capfd):
    with client(1, 500, dashboard=True) as c:
        link = c.dashboard_link
        assert link.startswith("http://127.0.0.1:")
        assert ":8787/" not in link
        assert _get_status(c) == 200
    err = capfd.readouterr().err
    assert err.count(link) == 1
