"""``dispatch.CeleryDispatcher`` publishes with kombu what ``Celery.send_task`` would, without Celery."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from neurondock_platform import broker, dispatch

ROOT = Path(__file__).resolve().parents[3]
# What differs between any two sends: the task id (and what repeats it), the sender's pid, the
# transport's delivery tag, and the reply queue Celery names for results this platform never asks for.
PER_SEND = {"id", "root_id", "correlation_id", "origin", "delivery_tag", "reply_to"}


def _published(db: Path) -> list[dict[str, object]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT payload FROM kombu_message ORDER BY id").fetchall()
    return [json.loads(payload) for (payload,) in rows]


def _without_per_send(message: dict[str, object]) -> dict[str, object]:
    out = {}
    for key, value in message.items():
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in PER_SEND}
        out[key] = value
    return out


def test_the_message_is_celerys_own(tmp_path):
    from celery import Celery

    url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    dispatch.CeleryDispatcher(url, "q").send(dispatch.RECONCILE_ENDPOINT, "123456789012", "ep-1")
    celery = Celery("neurondock", set_as_current=False)
    celery.conf.update(broker.celery_config(url, "q"))
    celery.send_task(dispatch.RECONCILE_ENDPOINT, args=["123456789012", "ep-1"])

    ours, theirs = _published(tmp_path / "broker.db")

    assert _without_per_send(ours) == _without_per_send(theirs)
    assert ours["headers"]["root_id"] == ours["headers"]["id"] == ours["properties"]["correlation_id"]
    assert ours["headers"]["origin"].startswith("gen")
    with sqlite3.connect(tmp_path / "broker.db") as conn:
        assert conn.execute("SELECT name FROM kombu_queue").fetchall() == [("q",)]


def test_sending_imports_no_celery(tmp_path):
    # The API sends tasks and never runs one: Celery's app would stay in its memory (docs/measured.md).
    url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    code = (
        "import sys\n"
        "from neurondock_platform import dispatch\n"
        f"dispatch.CeleryDispatcher({url!r}, 'q').send('neurondock.t', 1)\n"
        "print(' '.join(sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert not {m for m in out.stdout.split() if m.split(".")[0] == "celery"}
