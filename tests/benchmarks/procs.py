"""Process-tree measurements for benchmarks: CPU time, RSS and PSS read from /proc."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, utime + stime ticks) of a live process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def tree(root: int) -> list[int]:
    """``root`` and every descendant alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                children.setdefault(stat[0], []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def name(pid: int) -> str:
    """A short label from the command line (the module or script a Python process runs)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    for i, word in enumerate(words):
        if word == "-m" and i + 1 < len(words):
            return words[i + 1].rsplit(".", 1)[-1] + (" " + words[i + 2] if i + 2 < len(words) else "")
    return " ".join(Path(w).name for w in words[:2])[:60]


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """CPU seconds (user + system) each live process has used so far."""
    out = {}
    for pid in pids:
        stat = _stat(pid)
        if stat is not None:
            out[pid] = stat[1] / TICKS
    return out


@dataclass(frozen=True)
class CpuShare:
    """Share of one core each process used over a window."""

    window_s: float
    by_pid: dict[int, float]

    @property
    def total(self) -> float:
        """Percent of one core, the whole tree."""
        return sum(self.by_pid.values())

    def top(self, n: int = 6) -> str:
        """The busiest processes, labelled."""
        ranked = sorted(self.by_pid.items(), key=lambda kv: -kv[1])[:n]
        return ", ".join(f"{name(pid)} {share:.2f}%" for pid, share in ranked if share > 0)


def cpu_share(root: int, window_s: float) -> CpuShare:
    """Percent of one core each process of ``root``'s tree used over the next ``window_s`` seconds."""
    pids = tree(root)
    before, started = cpu_seconds(pids), time.monotonic()
    time.sleep(window_s)  # the measurement window itself, not a wait for readiness
    after, elapsed = cpu_seconds(pids), time.monotonic() - started
    return CpuShare(elapsed, {pid: 100.0 * (after[pid] - before[pid]) / elapsed for pid in after if pid in before})


def settle(root: int, timeout: float = 120.0, busiest: float = 3.0) -> None:
    """Wait until no process of ``root``'s tree uses more than ``busiest`` % of a core over a second.

    A platform is idle only once its warm standby interpreters finished importing torch.
    """
    from tests.support.waiting import wait_for

    last: list[CpuShare] = []

    def quiet() -> bool:
        # Three quiet seconds in a row: one can fall between two standby interpreters' imports.
        for _ in range(3):
            last[:] = [cpu_share(root, 1.0)]
            if max(last[0].by_pid.values(), default=0.0) > busiest:
                return False
        return True

    wait_for(quiet, timeout, what="the platform to go quiet", state=lambda: last[0].top() if last else None)


def memory_mb(pids: list[int]) -> tuple[float, float]:
    """(RSS, PSS) in MB summed over ``pids``, from /proc/<pid>/smaps_rollup."""
    rss = pss = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return rss / 1024, pss / 1024


def memory_by_process(root: int) -> str:
    """RSS / PSS in MB of each process of ``root``'s tree that holds at least 1 MB, labelled, biggest first."""
    rows = [(name(pid), *memory_mb([pid])) for pid in tree(root)]
    rows = sorted((r for r in rows if r[1] >= 1.0), key=lambda r: -r[1])
    return ", ".join(f"{label} {rss:.0f}/{pss:.0f}" for label, rss, pss in rows)


def _thread_runs(pid: int) -> dict[int, tuple[int, int]]:
    """(CPU ns, times run) of each live thread of ``pid``, from /proc/<pid>/task/<tid>/schedstat."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[0]), int(fields[2]))
    return out


def _comm(pid: int, tid: int) -> str:
    try:
        return Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    except OSError:
        return "?"


@dataclass(frozen=True)
class Wakeups:
    """How often each thread of a process tree ran over a window (a run is a wake-up when it is idle)."""

    window_s: float
    # (process label, pid, tid, thread name) -> (runs per second, % of one core)
    by_thread: dict[tuple[str, int, int, str], tuple[float, float]]
    # Runs and CPU of threads that started or ended inside the window are not seen by two reads.
    threads_came_or_went: int

    @property
    def total(self) -> float:
        """Runs per second of every thread alive for the whole window."""
        return sum(runs for runs, _ in self.by_thread.values())

    def top(self, n: int = 8) -> str:
        """The threads that ran most often, labelled."""
        ranked = sorted(self.by_thread.items(), key=lambda kv: -kv[1][0])[:n]
        return ", ".join(
            f"{label}[{tid if tid != pid else 'main'} {comm}] {runs:.2f}/s {cpu:.3f}%"
            for (label, pid, tid, comm), (runs, cpu) in ranked
            if runs > 0
        )


def jit_seconds(pids: list[int]) -> float:
    """CPU seconds the JVM's JIT compiler threads ("C1 CompilerThre", "C2 CompilerThre") of ``pids`` used so far."""
    return sum(
        ns / 1e9
        for pid in pids
        for tid, (ns, _runs) in _thread_runs(pid).items()
        if _comm(pid, tid).startswith(("C1 Compiler", "C2 Compiler"))
    )


def thread_runs(pids: list[int]) -> dict[tuple[int, int], tuple[int, int]]:
    """(CPU ns, times run) of every thread of ``pids``, keyed (pid, tid)."""
    return {(pid, tid): value for pid in pids for tid, value in _thread_runs(pid).items()}


def cpu_and_wakeups(root: int, window_s: float) -> tuple[CpuShare, Wakeups]:
    """Over the next ``window_s`` seconds: each process's share of a core, and each thread's runs and CPU."""
    pids = tree(root)
    cpu_before, before, started = cpu_seconds(pids), thread_runs(pids), time.monotonic()
    time.sleep(window_s)  # the measurement window itself, not a wait for readiness
    cpu_after, after, elapsed = cpu_seconds(pids), thread_runs(pids), time.monotonic() - started
    share = {pid: 100.0 * (cpu_after[pid] - cpu_before[pid]) / elapsed for pid in cpu_after if pid in cpu_before}
    rows = {}
    for key in after.keys() & before.keys():
        pid, tid = key
        ns, runs = (a - b for a, b in zip(after[key], before[key], strict=True))
        rows[(name(pid), pid, tid, _comm(pid, tid))] = (runs / elapsed, 100.0 * ns / 1e9 / elapsed)
    return CpuShare(elapsed, share), Wakeups(elapsed, rows, len(after.keys() ^ before.keys()))
