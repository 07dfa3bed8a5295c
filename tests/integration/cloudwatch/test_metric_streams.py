"""A metric flush resolves its streams in a few statements, however many are new."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import event, func, select


def _rows(count: int, account: str) -> list[dict]:
    start = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
    return [
        {
            "account_id": account,
            "namespace": "AWS/SageMaker",
            "metric_name": f"Metric{i % 5}",
            "dimensions": [("EndpointName", f"ep-{i // 5}"), ("VariantName", "AllTraffic")],
            "period_start": start,
            "period_seconds": 10,
            "sample_count": 1,
            "sum": float(i),
        }
        for i in range(count)
    ]


def test_new_streams_are_created_and_found_in_a_few_statements_and_match_their_rows(
    engine, session_factory, monkeypatch
):
    from neurondock_platform.db import session_scope
    from neurondock_platform.models import MetricDatapoint, MetricStream
    from neurondock_platform.services import metrics

    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    monkeypatch.setattr(metrics, "STREAM_CHUNK", 16)  # several chunks, as a large flush has
    rows = _rows(40, "123456789012") + _rows(5, "123456789012")  # the last five repeat streams
    cache: dict = {}
    with session_scope(session_factory) as session:
        assert metrics.write_points(session, rows, cache) == 45
    # Per chunk of unknown streams: look, create the missing, look again; then one insert of the points.
    assert len(statements) <= 3 * 3 + 1 + 2, statements  # (+ the transaction's own BEGIN/COMMIT, if any)
    with session_scope(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(MetricStream)) == 40
        assert session.scalar(select(func.count()).select_from(MetricDatapoint)) == 45
        assert len(cache) == 40
        for key, id_ in cache.items():
            row = session.get(MetricStream, id_)
            assert row is not None
            found = (row.account_id, row.namespace, row.metric_name, row.dimensions_hash)
            assert found == (key.account_id, key.namespace, key.metric_name, metrics.dimensions_hash(key.dimensions))

    statements.clear()
    with session_scope(session_factory) as session:
        metrics.write_points(session, rows, cache)  # every stream known: only the points are written
        metrics.write_points(session, _rows(40, "123456789012"))  # no cache: one look per chunk, no create
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 2, statements
