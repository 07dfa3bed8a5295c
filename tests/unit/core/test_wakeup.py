"""Doorbells wake a waiting process at once; the embedded broker delivers when rung and survives a queue race."""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Iterator

import pytest
from kombu import Connection, Consumer, Producer, Queue

from neurondock_platform import broker, wakeup


def test_a_ring_wakes_every_listener_at_once_and_a_dead_ones_socket_goes(tmp_path):
    directory = tmp_path / "bells"
    first, second = wakeup.Doorbell(directory), wakeup.Doorbell(directory)
    try:
        assert not first.wait(0.05)  # nobody rang
        started = time.monotonic()
        threading.Timer(0.1, wakeup.ring, args=(directory,)).start()
        assert first.wait(30) and time.monotonic() - started < 5
        assert second.wait(5)  # the same ring reached it too
        assert not first.wait(0) and not second.wait(0)  # and both consumed it

        gone = wakeup.Doorbell(directory)
        gone._sock.close()  # its process died without removing the socket
        wakeup.ring(directory)
        assert not gone.path.exists() and first.wait(0)
    finally:
        first.close()
        second.close()
    wakeup.ring(directory)  # nobody listening: nothing happens
    wakeup.ring(tmp_path / "never-made")


def test_every_new_factory_rings_even_where_a_dropped_one_left_its_id(tmp_path):
    # As dispatch.install: a new factory at a dropped one's address must still get its listeners.
    from sqlalchemy import create_engine

    from neurondock_platform.db import make_sessionmaker

    engine = create_engine("sqlite://")
    topic = next(iter(wakeup._WATCHED))
    bell = wakeup.Doorbell(wakeup.bells_dir(tmp_path, topic))
    gc.disable()
    try:
        silent = []
        for i in range(100):
            factory = make_sessionmaker(engine)
            wakeup.install(factory, tmp_path)
            with factory() as session:
                session.info[wakeup._PENDING] = {topic}  # what _after_flush records for a watched row
                session.commit()
            if not bell.wait(5):
                silent.append(i)
            del factory, session
        assert silent == []
    finally:
        gc.enable()
        bell.close()
        engine.dispose()


def test_the_embedded_broker_looks_when_rung_and_otherwise_only_every_idle_poll(tmp_path):
    url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    assert broker.bells(url) == tmp_path / "broker.db.bells" and broker.bells("redis://localhost:6379/0") is None
    queue = Queue("q", routing_key="q")
    got: list[str] = []

    with Connection(broker.resolve_broker_url(url)) as worker, Connection(broker.resolve_broker_url(url)) as sender:

        def take(body: str, message: object) -> None:
            got.append(body)
            message.ack()  # type: ignore[attr-defined]

        consumer = Consumer(worker.channel(), [queue], callbacks=[take])
        consumer.consume()
        with pytest.raises(TimeoutError):
            worker.drain_events(timeout=0.3)  # looked once, found nothing: now idle

        Producer(sender.channel()).publish("quiet", routing_key="q", declare=[queue])
        with pytest.raises(TimeoutError):
            worker.drain_events(timeout=0.5)  # not rung: the next look is IDLE_POLL away
        assert got == []

        Producer(sender.channel()).publish("rung", routing_key="q", declare=[queue])
        broker.ring(url)
        started = time.monotonic()
        while len(got) < 2 and time.monotonic() - started < 10:
            with contextlib.suppress(TimeoutError):
                worker.drain_events(timeout=0.25)
        assert sorted(got) == ["quiet", "rung"] and time.monotonic() - started < broker.IDLE_POLL


def test_two_processes_creating_the_same_queue_at_once_both_get_it(tmp_path, monkeypatch):
    from sqlalchemy.orm import Query

    url = broker.resolve_broker_url(f"sqla+sqlite:///{tmp_path / 'broker.db'}")
    with Connection(url) as first, Connection(url) as second:
        mine, theirs = first.channel(), second.channel()
        theirs._get_or_create("q")  # the other process inserts the row first ...
        real_first, blind = Query.first, [2]

        def first_after_race(query: Query) -> object:
            if blind[0]:  # ... after both of this process's looks had found nothing
                blind[0] -= 1
                return None
            return real_first(query)

        monkeypatch.setattr(Query, "first", first_after_race)
        row = mine._get_or_create("q")
        assert blind == [0] and row.name == "q" and row.id == theirs._get_or_create("q").id


@contextlib.contextmanager
def _idle_worker(tmp_path, monkeypatch) -> Iterator[Connection]:
    """A consumer of an empty queue on an embedded broker, with a shutdown flag of its own."""
    monkeypatch.setattr(broker, "_shutting_down", threading.Event())
    with Connection(broker.resolve_broker_url(f"sqla+sqlite:///{tmp_path / 'broker.db'}")) as worker:
        Consumer(worker.channel(), [Queue("q", routing_key="q")], callbacks=[lambda body, message: None]).consume()
        yield worker


def test_a_shutdown_ends_a_drain_waiting_on_its_doorbell(tmp_path, monkeypatch):
    outcome: list[str] = []
    with _idle_worker(tmp_path, monkeypatch) as worker:

        def drain() -> None:
            try:
                worker.drain_events(timeout=60)  # nothing is sent and nobody rings
            except TimeoutError:
                outcome.append("returned")

        waiting = threading.Thread(target=drain, daemon=True)
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive()  # a whole-timeout wait, not DRAIN_SLICE
        broker.interrupt_drains()
        waiting.join(10)
        assert outcome == ["returned"] and not waiting.is_alive()


def test_an_untimed_drain_returns_once_per_ring_and_otherwise_waits(tmp_path, monkeypatch):
    returns: list[float] = []
    with _idle_worker(tmp_path, monkeypatch) as worker:
        assert worker.transport.rings(worker.connection)

        def loop() -> None:
            while not broker._shutting_down.is_set():
                with contextlib.suppress(TimeoutError):
                    worker.drain_events(timeout=None)  # as the worker's loop asks (neurondock_workers.drains)
                returns.append(time.monotonic())

        turning = threading.Thread(target=loop, daemon=True)
        turning.start()
        started = time.monotonic()
        while not returns and time.monotonic() - started < 10:
            time.sleep(0.01)
        assert len(returns) == 1  # its first look found nothing
        time.sleep(0.3)  # not readiness: a window in which nobody rings
        assert len(returns) == 1
        broker.ring(f"sqla+sqlite:///{tmp_path / 'broker.db'}")
        while len(returns) < 2 and time.monotonic() - started < 10:
            time.sleep(0.01)
        assert len(returns) == 2  # one turn for the ring's look, which found nothing
        broker.interrupt_drains()
        turning.join(10)
        assert not turning.is_alive()


def test_the_workers_loop_asks_the_embedded_broker_for_untimed_drains(tmp_path):
    from types import SimpleNamespace

    from celery.worker import loops

    from neurondock_workers import drains

    asked: list[float | None] = []
    blueprint = SimpleNamespace(state=loops.bootsteps.RUN)
    with Connection(broker.resolve_broker_url(f"sqla+sqlite:///{tmp_path / 'broker.db'}")) as connection:
        connection.connect()

        def drain_events(timeout: float | None = None) -> None:
            asked.append(timeout)
            blueprint.state = loops.bootsteps.CLOSE
            raise TimeoutError()

        connection.drain_events = drain_events  # type: ignore[method-assign]
        obj = SimpleNamespace(
            create_task_handler=lambda: None,
            perform_pending_operations=lambda: None,
            pool=SimpleNamespace(is_green=False),
            on_ready=lambda: None,
            connection=connection,
        )
        consumer = SimpleNamespace(consume=lambda: None)
        qos = SimpleNamespace(prev=1, value=1)
        drains.synloop(obj, connection, consumer, blueprint, None, qos, None, None)
    assert asked == [None]  # Celery's own loop asks for 2.0
