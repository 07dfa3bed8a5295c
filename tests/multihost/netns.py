"""Isolated "hosts" on this machine: Linux network namespaces on one private bridge.

Layout (every name carries a per-run tag, so concurrent runs never meet):

    <tag>-sw      the switch: a bridge ``br0`` and one veth port per node (``p-<node>``)
    <tag>-<node>  one namespace per node, its ``eth0`` on the bridge with 10.77.<n>.<i>/24
    root ns       one veth ``<tag>-drv`` with 10.77.<n>.254: the test's own client traffic

Traffic stays inside these namespaces and that one veth; nothing routes anywhere else. ``close()``
kills every process in every namespace (``ip netns pids``), then deletes the namespaces and the veth.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.support.waiting import WaitTimeout, wait_for

PREFIX = "nd"  # every namespace and root-ns link this harness makes starts with "nd" and a tag


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command, raising with its stderr when it fails."""
    result = subprocess.run(list(argv), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here (None when they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add); run as root, as CI does"
    if shutil.which("ip") is None:
        return "iproute2's ip command is missing (apt-get install iproute2)"
    probe = f"{PREFIX}probe{uuid.uuid4().hex[:6]}"
    made = run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    run("ip", "netns", "del", probe, check=False)
    return None


def _free_subnet() -> int:
    """A third octet for 10.77.<n>.0/24 that no route and no other run on this machine uses."""
    routes = run("ip", "-4", "route", "show", "table", "all").stdout
    taken = set()
    for word in routes.split():
        with contextlib.suppress(ValueError):
            net = ipaddress.ip_network(word, strict=False)
            if net.subnet_of(ipaddress.ip_network("10.77.0.0/16")):
                taken.add(int(str(net.network_address).split(".")[2]))
    start = os.getpid() % 200
    for offset in range(200):
        candidate = 10 + (start + offset) % 200
        if candidate not in taken:
            return candidate
    raise RuntimeError("no free 10.77.x.0/24 subnet")


@dataclass
class Node:
    """One namespace on the bridge."""

    name: str
    namespace: str
    address: str


@dataclass
class Network:
    """A bridge in a namespace of its own, nodes on it, and the test's veth into it."""

    tag: str = field(default_factory=lambda: f"{PREFIX}{uuid.uuid4().hex[:5]}")
    subnet: int = 0
    nodes: dict[str, Node] = field(default_factory=dict)
    _processes: list[subprocess.Popen[Any]] = field(default_factory=list)

    @property
    def switch(self) -> str:
        return f"{self.tag}-sw"

    @property
    def driver_link(self) -> str:
        return f"{self.tag}-drv"

    def address(self, index: int) -> str:
        return f"10.77.{self.subnet}.{index}"

    def open(self) -> Network:
        """Create the switch and the test's own link into it."""
        self.subnet = _free_subnet()
        run("ip", "netns", "add", self.switch)
        sw = ("ip", "-n", self.switch)
        run(*sw, "link", "add", "br0", "type", "bridge")
        run(*sw, "link", "set", "br0", "up")
        run("ip", "link", "add", self.driver_link, "type", "veth", "peer", "name", "p-drv", "netns", self.switch)
        run(*sw, "link", "set", "p-drv", "master", "br0", "up")
        run("ip", "addr", "add", f"{self.address(254)}/24", "dev", self.driver_link)
        run("ip", "link", "set", self.driver_link, "up")
        return self

    def add(self, name: str, index: int) -> Node:
        """Create a node's namespace on the bridge with address 10.77.<n>.<index>."""
        namespace = f"{self.tag}-{name}"
        run("ip", "netns", "add", namespace)
        run("ip", "-n", self.switch, "link", "add", f"p-{name}", "type", "veth", "peer", "name", "eth0", "netns",
            namespace)  # fmt: skip
        run("ip", "-n", self.switch, "link", "set", f"p-{name}", "master", "br0", "up")
        node = Node(name, namespace, self.address(index))
        ns = ("ip", "-n", namespace)
        run(*ns, "link", "set", "lo", "up")
        run(*ns, "addr", "add", f"{node.address}/24", "dev", "eth0")
        run(*ns, "link", "set", "eth0", "up")
        self.nodes[name] = node
        return node

    def cut(self, name: str) -> None:
        """Take a node off the network: its switch port goes down (no RST, packets just vanish)."""
        run("ip", "-n", self.switch, "link", "set", f"p-{name}", "down")

    def restore(self, name: str) -> None:
        """Put a node back on the network."""
        run("ip", "-n", self.switch, "link", "set", f"p-{name}", "up")

    def popen(self, name: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a program inside a node's namespace (``ip netns exec`` execs it: the pid is the program's)."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.nodes[name].namespace, *argv], **kwargs)
        self._processes.append(proc)
        return proc

    def pids(self, name: str) -> list[int]:
        """Every process whose network namespace is the node's."""
        out = run("ip", "netns", "pids", self.nodes[name].namespace, check=False).stdout
        return [int(p) for p in out.split()]

    def kill_all(self, name: str, sig: int = signal.SIGKILL) -> list[int]:
        """Signal every process in a node's namespace (a host that dies at once); returns the pids."""
        pids = self.pids(name)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return pids

    def close(self) -> None:
        """Kill everything in every namespace, then remove the namespaces and the root veth."""
        # SIGKILL at once: nothing here outlives the test, so a graceful stop would only cost time.
        with contextlib.suppress(WaitTimeout):
            wait_for(lambda: not any(self.kill_all(name) for name in self.nodes), 10, what="the namespaces to empty")
        for proc in self._processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        for node in self.nodes.values():
            run("ip", "netns", "del", node.namespace, check=False)
        self.nodes.clear()
        run("ip", "link", "del", self.driver_link, check=False)
        run("ip", "netns", "del", self.switch, check=False)


def leftovers(tag: str) -> list[str]:
    """Namespaces and root links of a run that still exist (for the tests' own clean-up check)."""
    names = run("ip", "netns", "list").stdout.split()
    links = run("ip", "-o", "link", "show").stdout
    return [n for n in names if n.startswith(tag)] + ([f"{tag}-drv"] if f"{tag}-drv" in links else [])
