"""The host process (``python -m neurondock_workers host``): one signal story for its two halves, never half alive.

Celery's worker and the agent's run are stand-ins here (the real pair is
tests/integration/hosting/test_hosting_agent.py::test_host_process_*); what is under test is how
``run_host`` ties them together: a SIGTERM or SIGINT stops both, whichever thread the kernel hands it
to, and either half ending unasked ends the other and the process with a non-zero code.
"""

from __future__ import annotations

import os
import select
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from celery.worker import state as celery_state

from neurondock_platform import broker, database_gate
from neurondock_platform.config import Settings
from neurondock_workers import cli
from neurondock_workers.hosting import agent as agent_module

WAIT = 30.0


class FakeCelery:
    """Like Celery's worker on the embedded broker: ``start`` installs SIGTERM/SIGINT handlers, then waits.

    It waits as Celery's drain does: on a doorbell that ``broker.interrupt_drains`` rings, its signal
    handler running only once that wait ends. The handler only sets a flag (as Celery's does).
    """

    def __init__(self, *, ends_by_itself: bool = False) -> None:
        self.ends_by_itself = ends_by_itself
        self.started = threading.Event()
        self.stopped = False
        # Whether the agent was told to stop while this warm shutdown was under way, not after it.
        self.agent_told = False
        self._wake, self._ring = os.pipe()
        self.exitcode: int | None = None

    def ring(self) -> None:
        os.write(self._ring, b"!")

    def start(self) -> None:
        def warm_shutdown(signum: int, frame: Any) -> None:
            self.stopped = True

        signal.signal(signal.SIGTERM, warm_shutdown)
        signal.signal(signal.SIGINT, warm_shutdown)
        # Celery looks at its shutdown flag before it consumes (a stop asked while it was starting).
        if celery_state.should_stop is None:
            self.started.set()
            while not self.ends_by_itself and not self.stopped:
                assert select.select([self._wake], [], [], WAIT)[0], "never asked to stop"
                os.read(self._wake, 64)
            # A warm shutdown waits for the tasks under way; the agent stops meanwhile, not after it.
            self.agent_told = self.ends_by_itself or FakeAgentRun.last.stop.wait(WAIT)
        self.exitcode = 0

    def close(self) -> None:
        os.close(self._wake)
        os.close(self._ring)


class FakeAgentRun:
    """The agent's phases; ``serve`` runs until asked to stop, or raises once Celery runs with ``fails``."""

    fails = False
    celery: FakeCelery
    last: FakeAgentRun
    prepared: threading.Event
    serving: threading.Event

    def __init__(self, settings: Settings) -> None:
        self.stop = threading.Event()
        self.served = self.closed = False
        FakeAgentRun.last = self

    def prepare(self) -> None:
        self.prepared.set()

    def serve(self) -> None:
        self.served = True
        self.serving.set()
        if self.fails:
            assert self.celery.started.wait(WAIT)
            raise RuntimeError("the agent broke")
        assert self.stop.wait(WAIT), "never asked to stop"

    def request_stop(self) -> None:
        self.stop.set()

    def wake(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def host(monkeypatch, tmp_path: Path):
    """Run ``run_host`` with stand-ins; returns a function taking the fake Celery worker and a gate."""
    monkeypatch.setattr(celery_state, "should_stop", None)
    monkeypatch.setattr(broker, "_shutting_down", threading.Event())
    draining: set[Any] = set()
    monkeypatch.setattr(broker, "_draining", draining)
    monkeypatch.setattr(agent_module, "AgentRun", FakeAgentRun)
    monkeypatch.setattr(FakeAgentRun, "fails", False)
    # Per test, on the class: a test's helper thread may look before run_host made its instance.
    monkeypatch.setattr(FakeAgentRun, "prepared", threading.Event(), raising=False)
    monkeypatch.setattr(FakeAgentRun, "serving", threading.Event(), raising=False)
    settings = Settings(data_dir=tmp_path, stop_timeout=5.0)
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)}

    def run(celery: FakeCelery, gate: int | None = None) -> int:
        FakeAgentRun.celery = celery
        draining.add(celery)  # rung by broker.interrupt_drains, as the embedded broker's drain is
        monkeypatch.setattr(cli, "_celery_worker", lambda *args: celery)
        try:
            return cli.run_host(settings, gate=gate)
        finally:
            celery.close()  # only now: run_host's signal watch may ring it until run_host returns

    yield run
    assert {sig: signal.getsignal(sig) for sig in before} == before, "run_host must restore the signal handlers"


def _signal_once_both_run(celery: FakeCelery, signum: int, *, to_main: bool = True) -> threading.Thread:
    def send() -> None:
        assert celery.started.wait(WAIT) and FakeAgentRun.serving.wait(WAIT)
        # The kernel hands a process's signal to its main thread unless that one is busy with another.
        target = threading.main_thread() if to_main else threading.current_thread()
        signal.pthread_kill(target.ident or 0, signum)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_stops_both_halves_and_the_process_exits_zero(host, signum):
    celery = FakeCelery()
    _signal_once_both_run(celery, signum)

    assert host(celery) == 0

    assert celery.stopped
    assert celery.agent_told, "the agent stops beside Celery's warm shutdown, not after it"
    run = FakeAgentRun.last
    assert run.stop.is_set() and run.closed


def test_a_sigterm_the_kernel_gives_another_thread_stops_both_at_once(host):
    # Python would run the handler only once the main thread's broker wait ends by itself (WAIT here).
    celery = FakeCelery()
    _signal_once_both_run(celery, signal.SIGTERM, to_main=False)

    assert host(celery) == 0

    assert celery.stopped and celery.agent_told


def test_the_agent_half_raising_stops_the_celery_half_and_the_process_exits_non_zero(host, monkeypatch):
    monkeypatch.setattr(FakeAgentRun, "fails", True)
    celery = FakeCelery()

    assert host(celery) != 0

    assert celery.stopped, "the Celery half must not run on without its agent"


def test_the_celery_half_ending_unasked_stops_the_agent_and_the_process_exits_non_zero(host):
    celery = FakeCelery(ends_by_itself=True)

    assert host(celery) != 0

    run = FakeAgentRun.last
    assert run.stop.is_set() and run.closed, "the agent must not run on without its Celery worker"


def test_a_stop_asked_before_celery_starts_stops_it_as_it_starts(host):
    gates = database_gate.Gates()
    gate = gates.reader()
    celery = FakeCelery()

    def stop_then_open() -> None:
        # While the process waits at its gate, before Celery installed its handlers.
        assert FakeAgentRun.prepared.wait(WAIT)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)
        gates.open()

    threading.Thread(target=stop_then_open, daemon=True).start()

    assert host(celery, gate) == 0

    assert not celery.started.is_set()
    assert not FakeAgentRun.last.served


def test_the_one_process_waits_at_its_gate_once_and_exits_when_it_closes(host):
    gates = database_gate.Gates()
    gate = gates.reader()
    gates.close()
    celery = FakeCelery()

    with pytest.raises(SystemExit) as exited:
        host(celery, gate)

    assert exited.value.code == 1
    assert not celery.started.is_set() and not FakeAgentRun.last.served, "nothing may touch the database"
