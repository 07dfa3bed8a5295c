"""The standby pool's size follows demand: standbys while the host serves nothing, none while it serves.

The interpreters here speak the standby's control protocol (hello, ready, then wait) without importing
torch, so the policy is tested in a second; tests/integration/hosting/test_standby.py runs it with
real standbys and replicas.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

import pytest
from tests.support.waiting import wait_for

from neurondock_workers.hosting import standby
from neurondock_workers.hosting.standby import Interpreter, StandbyPool

# hello, ready, then wait for the activation message (EOF: let go).
_FAKE = (
    "import socket, sys\ns = socket.socket(fileno=int(sys.argv[1]))\ns.send(b'hello'); s.send(b'ready')\ns.recv(16)\n"
)
ENV = {"PATH": "/usr/bin:/bin"}


def _fake_spawn(
    sandbox: object, env: Mapping[str, str], log: IO[bytes], *, slots_dir: Path | None, network: bool = True
) -> Interpreter:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    parent.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", _FAKE, str(child.fileno())],
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        child.close()
    return Interpreter(proc, parent, sandbox=None, slot=None, uid=None, network=network)


@pytest.fixture(autouse=True)
def _fake_interpreters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(standby, "spawn", _fake_spawn)


@pytest.fixture
def make_pool(tmp_path: Path) -> Iterator[type[StandbyPool]]:
    pools: list[StandbyPool] = []

    def make(size: int = 1, *, while_serving: bool = False) -> StandbyPool:
        pool = StandbyPool(ENV, tmp_path / f"pool{len(pools)}", size=size, while_serving=while_serving)
        pools.append(pool)
        pool.fill()
        wait_for(lambda: pool.warm_count() == size, 30, what=f"{size} warm standbys", state=pool.warm_count)
        return pool

    yield make  # type: ignore[misc]
    for pool in pools:
        pool.close()


def _release(taken: Interpreter | None) -> None:
    assert taken is not None
    taken.release()


def test_by_default_a_serving_host_keeps_no_standby_and_refills_when_it_serves_none(make_pool):
    pool = make_pool()
    pool.serve()
    taken = pool.take(ENV)
    assert taken is not None
    pool.loaded(took=True)

    wait_for(lambda: not pool.filling, 10, what="the fill to end")
    assert (pool.waiting_count(), pool.spawned) == (0, 1), "no replacement while a replica is served"

    _release(taken)
    pool.unserve()
    wait_for(lambda: pool.warm_count() == 1, 30, what="the refill", state=lambda: pool.spawned)
    assert pool.spawned == 2


def test_a_standby_left_waiting_by_a_cold_start_is_stopped_once_that_replica_has_loaded(make_pool):
    pool = make_pool()
    pool.serve()
    assert pool.take({**ENV, "OMP_NUM_THREADS": "4"}) is None, "an incompatible replica starts cold"
    assert pool.waiting_count() == 1, "still there while the cold replica loads (a failure would want it)"

    pool.loaded(took=False)

    assert (pool.waiting_count(), pool.stopped) == (0, 1)
    pool.unserve()
    wait_for(lambda: pool.warm_count() == 1, 30, what="the refill", state=lambda: pool.spawned)


def test_while_serving_the_pool_refills_after_each_take(make_pool):
    pool = make_pool(while_serving=True)
    pool.serve()
    taken = pool.take(ENV)
    pool.loaded(took=True)

    wait_for(lambda: pool.warm_count() == 1, 30, what="the refill", state=lambda: pool.spawned)
    assert (pool.spawned, pool.stopped) == (2, 0)
    _release(taken)


def test_the_target_counts_every_replica_until_the_last_is_gone(make_pool):
    pool = make_pool(size=2)
    for _ in range(2):
        pool.serve()
    taken = [pool.take(ENV), pool.take(ENV)]
    for _ in taken:
        pool.loaded(took=True)
    pool.unserve()
    wait_for(lambda: not pool.filling, 10, what="the fill to end")
    assert (pool.waiting_count(), pool.spawned) == (0, 2), "one replica still served: no standby"

    pool.unserve()
    wait_for(lambda: pool.warm_count() == 2, 30, what="the refill of 2", state=lambda: pool.spawned)
    for interpreter in taken:
        _release(interpreter)


def test_a_closed_pool_starts_nothing_when_its_last_replica_goes(make_pool):
    pool = make_pool()
    pool.serve()
    taken = pool.take(ENV)
    pool.loaded(took=True)
    pool.close()

    pool.unserve()

    assert (pool.filling, pool.waiting_count(), pool.spawned) == (False, 0, 1)
    _release(taken)
