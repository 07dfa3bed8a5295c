"""An endpoint's timeline: its recorded status changes beside what its replica records say happened.

Status changes come from the event log (``endpoint_events``), which keeps every change; replica
events are derived from the replica rows, which keep only each replica's latest state.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from neurondock_platform.models import Endpoint, EndpointEvent
from neurondock_platform.services import endpoints as endpoint_service
from neurondock_platform.services.fleet import ReplicaView


@dataclass(frozen=True)
class TimelineEvent:
    """One moment of an endpoint's life: when, what kind (``StatusChanged``, ``ReplicaReady``…) and detail."""

    time: dt.datetime
    event: str
    detail: str


def endpoint_timeline(
    endpoint: Endpoint, replicas: Iterable[ReplicaView], status_changes: Iterable[EndpointEvent] = ()
) -> list[TimelineEvent]:
    """Return the endpoint's timeline, oldest first: recorded status changes beside replica records."""
    events: list[TimelineEvent] = []
    for change in status_changes:
        moved = f"{change.previous_status} → {change.status}" if change.previous_status else change.status
        events.append(
            TimelineEvent(change.occurred_at, "StatusChanged", moved + (f": {change.reason}" if change.reason else ""))
        )
    pending = endpoint_service.pending_update(endpoint)
    if pending is not None:
        events.append(
            TimelineEvent(pending.started_at, "UpdateAccepted", f"UpdateEndpoint to config {pending.config_name}")
        )
    for variant in endpoint.variants:
        if variant.status_started_at is not None and variant.variant_status:
            detail = f"variant {variant.name}: {variant.variant_status}"
            if variant.status_message:
                detail += f" ({variant.status_message})"
            events.append(TimelineEvent(variant.status_started_at, "VariantStatus", detail))
    for replica in replicas:
        where = f"replica {replica.id} of {replica.variant_name} on host {replica.host_id}"
        events.append(TimelineEvent(replica.created_at, "ReplicaPlaced", where))
        if replica.state == "Ready":
            setup = f" after {replica.setup_seconds:.2f} s" if replica.setup_seconds is not None else ""
            events.append(TimelineEvent(replica.updated_at, "ReplicaReady", f"{where} passed its health check{setup}"))
        elif replica.state == "Failed":
            events.append(
                TimelineEvent(replica.updated_at, "ReplicaFailed", f"{where}: {replica.failure_reason or 'exited'}")
            )
        elif replica.state == "Stopped":
            events.append(TimelineEvent(replica.updated_at, "ReplicaStopped", where))
    events.sort(key=lambda e: e.time)
    return events
