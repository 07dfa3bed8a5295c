"""Endpoint status history and recorded invocation errors: written once, read through the admin API.

Every test runs on SQLite and on PostgreSQL (the ``engine`` fixture's two backends).
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from tests.conftest import ACCOUNT_ID
from tests.support.world import IMAGE

NAME = "e1"
MODEL = "e1-model"


def _session(session_factory):
    from neurondock_platform.db import session_scope

    return session_scope(session_factory)


def _endpoint(session, name=NAME, account_id=ACCOUNT_ID):
    from sqlalchemy import select

    from neurondock_platform.models import Endpoint

    return session.scalars(select(Endpoint).where(Endpoint.account_id == account_id, Endpoint.name == name)).one()


def _create(session_factory, settings, name=NAME, account_id=ACCOUNT_ID, *, with_model=True, config="e1-config"):
    from neurondock_platform.services import deploy

    with _session(session_factory) as session:
        if with_model:
            deploy.create_model(
                session,
                account_id=account_id,
                region=settings.region,
                name=f"{name}-model",
                image=IMAGE,
                model_data_url="s3://models/m/model.tar.gz",
            )
        deploy.deploy_model(
            session,
            account_id=account_id,
            region=settings.region,
            name=name,
            model_name=f"{name}-model",
            instance_type="ml.c5.large",
            config_name=config,
        )


def _set_status(session_factory, status, failure_reason=None, name=NAME):
    """Change the status the way the reconciler does: on the ORM object, in its own transaction."""
    from neurondock_platform.services import endpoint_status

    with _session(session_factory) as session:
        endpoint_status.transition(session, _endpoint(session, name), status, failure_reason=failure_reason)


def _transitions(api, name=NAME):
    items = api.ok("GET", f"/endpoints/{name}/events")["items"]
    return [(e["previous_status"], e["status"], e["reason"]) for e in items]


def test_every_status_change_is_an_event_newest_first(api, session_factory, settings):
    from neurondock_platform.models import EndpointStatus
    from neurondock_platform.services import endpoint_configs, endpoints

    _create(session_factory, settings)
    _set_status(session_factory, EndpointStatus.IN_SERVICE)
    with _session(session_factory) as session:
        endpoint_configs.create_endpoint_config(
            session,
            account_id=ACCOUNT_ID,
            region=settings.region,
            name="e1-config-2",
            production_variants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": MODEL,
                    "InstanceType": "ml.c5.xlarge",
                    "InitialInstanceCount": 1,
                }
            ],
        )
        endpoints.update_endpoint(
            session, account_id=ACCOUNT_ID, region=settings.region, name=NAME, config_name="e1-config-2"
        )
    _set_status(session_factory, EndpointStatus.IN_SERVICE)
    _set_status(session_factory, EndpointStatus.FAILED, "Replica 1 of AllTraffic exited with code 137.")

    got = api.ok("GET", f"/endpoints/{NAME}/events")
    assert got["endpoint_name"] == NAME and got["deleted"] is False
    assert got["endpoint_arn"].endswith(f":{ACCOUNT_ID}:endpoint/{NAME}")
    assert [(e["previous_status"], e["status"], e["reason"]) for e in got["items"]] == [
        ("InService", "Failed", "Replica 1 of AllTraffic exited with code 137."),
        ("Updating", "InService", "update complete"),
        ("InService", "Updating", "UpdateEndpoint"),
        ("Creating", "InService", "CreateEndpoint complete"),
        (None, "Creating", "CreateEndpoint"),
    ]
    times = [dt.datetime.fromisoformat(e["time"].replace("Z", "+00:00")) for e in got["items"]]
    assert times == sorted(times, reverse=True) and all(t.tzinfo is not None for t in times)

    first = api.ok("GET", f"/endpoints/{NAME}/events", query={"limit": 2})
    assert [e["status"] for e in first["items"]] == ["Failed", "InService"] and first["next_token"]
    rest = api.ok("GET", f"/endpoints/{NAME}/events", query={"limit": 10, "next_token": first["next_token"]})
    assert [e["status"] for e in rest["items"]] == ["Updating", "InService", "Creating"] and rest["next_token"] is None


class FakeAgent:
    """Plays the host agent, one pass per reconciler sleep; replicas come up, or fail when ``fail``."""

    def __init__(self, session_factory) -> None:
        self.factory, self.now, self.fail = session_factory, 0.0, False

    def clock(self) -> float:
        return self.now

    def __call__(self, seconds: float) -> None:
        from sqlalchemy import select

        from neurondock_platform.db import utcnow
        from neurondock_platform.models import Host, Replica, ReplicaState

        self.now += seconds
        with _session(self.factory) as session:
            for host in session.scalars(select(Host)):
                host.last_heartbeat = utcnow()
            for r in session.scalars(select(Replica)):
                if r.desired_state == "stopped":
                    r.state = ReplicaState.STOPPED
                elif self.fail:
                    r.state, r.failure_reason, r.pid = ReplicaState.FAILED, "model_fn raised: boom", 42
                else:
                    r.state, r.address, r.pid = ReplicaState.READY, f"127.0.0.1:{9000 + r.id}", 42


def test_the_reconcilers_transitions_are_recorded(api, session_factory, settings):
    from neurondock_platform.models import Host
    from neurondock_platform.services import endpoints
    from neurondock_platform.services.reconciler import ReconcileOptions, reconcile_endpoint

    with _session(session_factory) as session:
        session.add(Host(id="h1", address="127.0.0.1", chips=16))
    agent = FakeAgent(session_factory)
    agent(0)

    def reconcile(name: str) -> str:
        with _session(session_factory) as session:
            endpoint_id = _endpoint(session, name).id
        return reconcile_endpoint(session_factory, endpoint_id, ReconcileOptions(), clock=agent.clock, sleep=agent)

    _create(session_factory, settings)
    assert reconcile(NAME) == "InService"
    with _session(session_factory) as session:
        endpoints.delete_endpoint(session, account_id=ACCOUNT_ID, region=settings.region, name=NAME)
    assert reconcile(NAME) == "deleted"
    assert _transitions(api) == [
        ("Deleting", "Deleted", "DeleteEndpoint complete"),
        ("InService", "Deleting", "DeleteEndpoint"),
        ("Creating", "InService", "CreateEndpoint complete"),
        (None, "Creating", "CreateEndpoint"),
    ]

    agent.fail = True
    _create(session_factory, settings, name="e2", config="e2-config")
    assert reconcile("e2") == "failed"
    (failed, _) = _transitions(api, "e2")
    assert failed[:2] == ("Creating", "Failed") and "model_fn raised: boom" in failed[2]


def test_unchanged_status_and_rolled_back_changes_leave_no_event(api, session_factory, settings):
    from neurondock_platform.models import EndpointStatus
    from neurondock_platform.services import endpoint_status

    _create(session_factory, settings)
    _set_status(session_factory, EndpointStatus.CREATING)  # the same value: no change
    with pytest.raises(RuntimeError), _session(session_factory) as session:
        endpoint_status.transition(session, _endpoint(session), EndpointStatus.IN_SERVICE)
        session.flush()
        raise RuntimeError("the transaction rolls back")
    assert _transitions(api) == [(None, "Creating", "CreateEndpoint")]


def test_scaling_a_failed_update_and_a_lost_host_name_their_cause(api, world, session_factory, settings):
    from neurondock_platform.models import Endpoint
    from neurondock_platform.services import endpoints, host_health

    endpoint_id = world(NAME, instance_type="ml.c5.large")["endpoint_id"]
    with _session(session_factory) as session:
        endpoints.update_weights_and_capacities(
            session,
            account_id=ACCOUNT_ID,
            region=settings.region,
            name=NAME,
            desired=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 2}],
        )
    with _session(session_factory) as session:
        endpoints.discard_pending_update(session, session.get(Endpoint, endpoint_id), "No capacity for ml.c5.large.")
    # The host stops heartbeating: one conditional bulk UPDATE flips the endpoint.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    with _session(session_factory) as session:
        assert host_health.endpoints_on_lost_hosts(session, settings.heartbeat_timeout, now=later) == [endpoint_id]
    assert _transitions(api)[:3] == [
        ("InService", "SystemUpdating", "host lost"),
        ("Updating", "InService", "No capacity for ml.c5.large."),
        ("InService", "Updating", "UpdateEndpointWeightsAndCapacities"),
    ]


def test_a_deleted_endpoint_keeps_its_history_until_the_name_is_reused(api, session_factory, settings):
    from neurondock_platform.models import EndpointStatus
    from neurondock_platform.services import endpoint_status, endpoints, invocation_errors

    _create(session_factory, settings)
    _set_status(session_factory, EndpointStatus.IN_SERVICE)
    with _session(session_factory) as session:
        invocation_errors.write_errors(session, [_error_row(0)])
    with _session(session_factory) as session:
        endpoints.delete_endpoint(session, account_id=ACCOUNT_ID, region=settings.region, name=NAME)
    with _session(session_factory) as session:
        endpoint = _endpoint(session)  # what the reconciler does once the replicas stopped
        endpoint_status.deleted(session, endpoint)
        session.delete(endpoint)

    assert api.get(f"/endpoints/{NAME}").status_code == 404
    got = api.ok("GET", f"/endpoints/{NAME}/events")
    assert got["deleted"] is True
    assert [(e["previous_status"], e["status"]) for e in got["items"][:2]] == [
        ("Deleting", "Deleted"),
        ("InService", "Deleting"),
    ]
    assert got["items"][1]["reason"] == "DeleteEndpoint"
    assert len(api.ok("GET", f"/endpoints/{NAME}/errors")["items"]) == 1

    # A new endpoint takes the name: it starts clean.
    _create(session_factory, settings, with_model=False, config="e1-config-again")
    got = api.ok("GET", f"/endpoints/{NAME}/events")
    assert got["deleted"] is False and _transitions(api) == [(None, "Creating", "CreateEndpoint")]
    assert api.ok("GET", f"/endpoints/{NAME}/errors")["items"] == []


def test_another_account_gets_the_same_not_found_as_for_a_missing_endpoint(api, tenant, session_factory, settings):
    from neurondock_platform.services import invocation_errors

    _create(session_factory, settings)
    with _session(session_factory) as session:
        invocation_errors.write_errors(session, [_error_row(0)])
    assert api.ok("GET", f"/endpoints/{NAME}/events")["items"]
    for route in ("events", "errors"):
        theirs = tenant.api.get(f"/endpoints/{NAME}/{route}")
        missing = tenant.api.get(f"/endpoints/nope/{route}")
        assert theirs.status_code == missing.status_code == 404
        assert theirs.get_json()["error"]["code"] == missing.get_json()["error"]["code"] == "NotFound"
        assert theirs.get_json()["error"]["message"] == missing.get_json()["error"]["message"].replace("nope", NAME)
        assert api.get(f"/endpoints/nope/{route}").status_code == 404
    # The tenant's own endpoint of the same name has its own history.
    _create(session_factory, settings, account_id=tenant.account_id)
    assert _transitions(tenant.api) == [(None, "Creating", "CreateEndpoint")]
    assert tenant.api.ok("GET", f"/endpoints/{NAME}/errors")["items"] == []
    assert len(api.ok("GET", f"/endpoints/{NAME}/events")["items"]) == 1


# ------------------------------------------------------------------------------------ invocation errors


def _error_row(i: int, name: str = NAME) -> dict:
    return {
        "account_id": ACCOUNT_ID,
        "endpoint_name": name,
        "variant_name": "AllTraffic",
        "replica_id": None,
        "http_status": 429,
        "error_code": "ThrottlingException",
        "message": f"throttled {i}",
        "original_status_code": None,
        "original_message": None,
        "request_id": f"req-{i}",
        "occurred_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=i),
        "source": "test",
    }


def test_recorded_errors_are_flushed_bounded_and_readable(api, world, session_factory):
    from neurondock_platform.dataplane.invocation_errors import RING_SIZE, FailedInvocation
    from neurondock_platform.dataplane.metrics import MetricsCollector, MetricsFlusher
    from neurondock_platform.services.invocation_errors import KEEP_PER_ENDPOINT

    world(NAME, instance_type="ml.c5.large")
    collector = MetricsCollector(source="api-1")
    flusher = MetricsFlusher(collector, session_factory)
    start = 1_700_000_000.0
    serial = 0

    def record(count: int) -> None:
        nonlocal serial
        for _ in range(count):
            serial += 1
            collector.errors.record(
                FailedInvocation(
                    account_id=ACCOUNT_ID,
                    endpoint_name=NAME,
                    variant_name="AllTraffic",
                    http_status=424,
                    error_code="ModelError",
                    message="Received client error (400) from primary with message " + "x" * 3000,
                    request_id=f"req-{serial}",
                    replica_id=7,
                    original_status_code=400,
                    original_message="bad input",
                    at=start + serial,
                )
            )

    record(RING_SIZE + 20)  # one ring holds the newest RING_SIZE between flushes
    assert len(collector.errors) == RING_SIZE and collector.errors.dropped == 20
    asyncio.run(flusher.flush())
    assert len(collector.errors) == 0
    got = api.ok("GET", f"/endpoints/{NAME}/errors", query={"limit": 3})
    newest = got["items"][0]
    assert [e["request_id"] for e in got["items"]] == [f"req-{serial}", f"req-{serial - 1}", f"req-{serial - 2}"]
    assert newest["http_status"] == 424 and newest["error_code"] == "ModelError"
    assert newest["original_status_code"] == 400 and newest["original_message"] == "bad input"
    assert newest["replica_id"] == 7 and newest["variant_name"] == "AllTraffic"
    assert len(newest["message"]) == 1024
    assert newest["time"] == dt.datetime.fromtimestamp(start + serial, dt.UTC).isoformat().replace("+00:00", "Z")
    assert got["next_token"]

    for _ in range(KEEP_PER_ENDPOINT // RING_SIZE + 1):
        record(RING_SIZE)
        asyncio.run(flusher.flush())
    ids = []
    token = None
    while True:
        query = {"limit": 100, **({"next_token": token} if token else {})}
        page = api.ok("GET", f"/endpoints/{NAME}/errors", query=query)
        ids += [int(e["request_id"].removeprefix("req-")) for e in page["items"]]
        token = page["next_token"]
        if not token:
            break
    assert ids == list(range(serial, serial - KEEP_PER_ENDPOINT, -1))


def test_a_failed_flush_keeps_the_errors_for_the_next_one():
    from neurondock_platform.dataplane.invocation_errors import FailedInvocation
    from neurondock_platform.dataplane.metrics import MetricsCollector, MetricsFlusher

    collector = MetricsCollector(source="api-1")
    failure = FailedInvocation(ACCOUNT_ID, NAME, None, 503, "ServiceUnavailable", "no replica", "req-1")
    collector.errors.record(failure)

    class Broken:
        def __call__(self):
            raise OSError("database away")

    assert asyncio.run(MetricsFlusher(collector, Broken()).flush()) == 0
    assert collector.errors.take() == [failure]


def test_the_console_endpoint_page_shows_the_history_and_the_errors(client, world, session_factory):
    from tests.integration.admin.test_console_pages import sign_in

    from neurondock_platform.models import EndpointStatus
    from neurondock_platform.services import invocation_errors

    world(NAME, instance_type="ml.c5.large")
    _set_status(session_factory, EndpointStatus.FAILED, "Replica <1> exited.")
    row = {**_error_row(1), "http_status": 424, "error_code": "ModelError", "original_status_code": 400}
    with _session(session_factory) as session:
        invocation_errors.write_errors(session, [{**row, "original_message": "bad <input>"}])
    assert sign_in(client).status_code == 302
    html = client.get(f"/console/endpoints/{NAME}").get_data(as_text=True)
    history = html[html.index('id="history"') :]
    assert history.index("Replica &lt;1&gt; exited.") < history.index("CreateEndpoint complete")
    assert "InService</span> → <span" in history
    errors = html[html.index('id="errors"') : html.index('id="history"')]
    assert "ModelError" in errors and "bad &lt;input&gt;" in errors and "req-1" in errors


def test_two_writers_making_the_same_change_record_it_once(api, session_factory, settings):
    """A CreateEndpoint reconcile and a start-up recovery reconcile both flip Creating → InService."""
    from neurondock_platform.models import EndpointStatus
    from neurondock_platform.services import endpoint_status

    _create(session_factory, settings)
    first, second = session_factory(), session_factory()
    try:
        seen = [_endpoint(session) for session in (first, second)]
        assert [e.status for e in seen] == [EndpointStatus.CREATING] * 2  # both loaded it as Creating
        for session, endpoint in zip((first, second), seen, strict=True):
            endpoint_status.transition(session, endpoint, EndpointStatus.IN_SERVICE)
            session.commit()
    finally:
        first.close()
        second.close()
    assert _transitions(api) == [
        ("Creating", "InService", "CreateEndpoint complete"),
        (None, "Creating", "CreateEndpoint"),
    ]
    # A real change after it is still recorded.
    _set_status(session_factory, EndpointStatus.SYSTEM_UPDATING)
    assert [t[1] for t in _transitions(api)] == ["SystemUpdating", "InService", "Creating"]
