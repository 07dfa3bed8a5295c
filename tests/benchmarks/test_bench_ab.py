"""Benchmark: the tiny MLP at c=1 on platforms run from several source trees at once, in turns.

Two runs of ``test_bench_dataplane.py`` one after the other drift apart on this shared 2-core machine
by more than a change under test moves the c=1 loopback median (0.1-0.3 ms on ~0.9 ms, the in-process
loop of the same run drifting with it; docs/measured.md, "The c=1 loopback median, base against
main, in turns"). Here every tree's platform is up at the same time and one client takes short
turns on each (rotating which goes first), so whatever slows the machine slows every tree alike.
The client is this tree's; only the platforms differ.

``NEURONDOCK_AB_TREES="base=/work/wt/x-base new=/work/wt/x" python -m pytest
tests/benchmarks/test_bench_ab.py -m benchmark -s``: the first tree is the reference. Prints, per
tree, the loopback e2e p50 / p99, the client and HTTP share (e2e - the server's own time), the
replica round trip and the OverheadLatency, and the median of each turn's e2e median minus the
reference's in the same round. Never asserts times.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.benchmarks.test_bench_dataplane import _deploy, npy, pct, signed_headers
from tests.support.platform import Platform
from tests.support.torch_models import tiny_mlp

pytestmark = pytest.mark.benchmark

TREES_ENV = "NEURONDOCK_AB_TREES"
ROUNDS = 40
# A round's turns must end within the replica's idle trim (2 s) or each would start on a trimmed heap.
TURN_CALLS = 150


def _trees() -> list[tuple[str, Path]]:
    spec = os.environ.get(TREES_ENV, "")
    return [(tag, Path(tree)) for tag, _, tree in (each.partition("=") for each in spec.split())]


@pytest.fixture(scope="module")
def platforms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[tuple[str, Platform]]]:
    trees = _trees()
    if len(trees) < 2:
        pytest.skip(f"{TREES_ENV} names fewer than two trees")
    started: list[tuple[str, Platform]] = []
    try:
        for tag, tree in trees:
            path = os.pathsep.join(str(tree / part) for part in ("platform", "workers", "sdk"))
            plat = Platform(tmp_path_factory.mktemp(f"nd-ab-{tag}"), extra_env={"PYTHONPATH": path})
            plat.start()
            started.append((tag, plat))
        yield started
    finally:
        for _, plat in started:
            plat.stop()


class Turns:
    """One keep-alive connection to one platform's endpoint, called in turns."""

    def __init__(self, plat: Platform, path: str, body: bytes) -> None:
        self.path, self.body = path, body
        self.headers = signed_headers(plat, path, body)
        self.conn = http.client.HTTPConnection("127.0.0.1", plat.port, timeout=120)
        self.conn.connect()
        assert self.conn.sock is not None
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Per call: e2e, client and HTTP share, replica round trip, OverheadLatency (ms).
        self.calls: list[tuple[float, float, float, float]] = []
        self.turn_medians: list[float] = []

    def turn(self, count: int, keep: bool = True) -> None:
        """Call ``count`` times; kept calls count toward the figures."""
        calls = []
        for _ in range(count):
            start = time.perf_counter()
            self.conn.request("POST", self.path, body=self.body, headers=self.headers)
            response = self.conn.getresponse()
            response.read()
            e2e = (time.perf_counter() - start) * 1e3
            assert response.status == 200, response.status
            parts = re.findall(r"(\w+);dur=([\d.]+)", response.getheader("server-timing") or "")
            timing = {name: float(value) for name, value in parts}
            calls.append((e2e, e2e - timing["overhead"] - timing["model"], timing["model"], timing["overhead"]))
        if keep:
            self.calls += calls
            self.turn_medians.append(pct([c[0] for c in calls], 0.5))


def test_trees_in_turns(platforms: list[tuple[str, Platform]], tmp_path: Path) -> None:
    import numpy as np

    mlp = tiny_mlp()
    body = npy(np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32))
    turns = {
        tag: Turns(plat, f"/endpoints/{_deploy(plat, tmp_path, mlp)}/invocations", body) for tag, plat in platforms
    }
    for each in turns.values():
        each.turn(200, keep=False)
    tags = list(turns)
    for r in range(ROUNDS):
        order = tags[r % len(tags) :] + tags[: r % len(tags)]
        for tag in order[::-1] if r % 2 else order:
            turns[tag].turn(TURN_CALLS)
    reference = turns[tags[0]]
    lines = [f"\n[bench-ab] tiny MLP c=1, {ROUNDS} rounds of {TURN_CALLS} calls a tree, reference {tags[0]}"]
    for tag, each in turns.items():
        e2e, share, trip, overhead = (list(column) for column in zip(*each.calls, strict=True))
        apart = [a - b for a, b in zip(each.turn_medians, reference.turn_medians, strict=True)]
        lines.append(
            f"[bench-ab] {tag}: e2e p50 {pct(e2e, 0.5):.3f} p99 {pct(e2e, 0.99):.3f} ms; client and HTTP share "
            f"{pct(share, 0.5):.3f}, replica round trip {pct(trip, 0.5):.3f}, "
            f"OverheadLatency {pct(overhead, 0.5):.3f} ms; "
            f"turn medians minus the reference's: median {statistics.median(apart):+.3f} ms, "
            f"slower in {sum(1 for d in apart if d > 0)}/{ROUNDS} rounds"
        )
    print("\n".join(lines))
