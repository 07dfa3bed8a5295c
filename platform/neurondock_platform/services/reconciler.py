"""The endpoint reconciler: one idempotent function that converges an endpoint to its desired state.

Desired state lives in the database (Endpoint.status, EndpointVariant.desired_*); the host agents
report what actually runs (Replica.state). Running this twice, or after a crash, is safe: every pass
reads both and only does what is missing. A pass that sees ``Endpoint.generation`` move on stops,
because a newer pass owns the endpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from neurondock_platform import catalog
from neurondock_platform.catalog import NEURON_CORES_PER_CHIP as CORES_PER_CHIP
from neurondock_platform.db import session_scope, utcnow
from neurondock_platform.models import (
    Endpoint,
    EndpointStatus,
    EndpointVariant,
    Host,
    Replica,
    ReplicaState,
    Tag,
)
from neurondock_platform.services import endpoint_status, endpoints, placement
from neurondock_platform.services.images import UnsupportedImageError, resolve_image
from neurondock_platform.services.instance_types import chips_for

log = logging.getLogger(__name__)

FAILURE_REASON_MAX = 1024
SERVING = (
    EndpointStatus.CREATING,
    EndpointStatus.UPDATING,
    EndpointStatus.SYSTEM_UPDATING,
    EndpointStatus.IN_SERVICE,
)
DONE_STATES = (ReplicaState.STOPPED, ReplicaState.FAILED)
ROLLBACK_REASON = "rollback_reason"
ROLLING_BACK = "rolling back"
# Twice the API's routing-table refresh interval (dataplane/routing.py refreshes every 0.25 s).
ROUTE_PROPAGATION_SECONDS = 0.6


@dataclass(frozen=True)
class ReconcileOptions:
    """Deadlines and poll interval of one reconcile pass."""

    startup_timeout: float = 600.0
    stop_timeout: float = 30.0
    capacity_wait: float = 15.0
    heartbeat_timeout: float = 15.0
    poll_interval: float = 0.05


class _Superseded(Exception):
    """A newer desired state arrived while this pass was waiting."""


def reconcile_endpoint(
    factory: sessionmaker[Session],
    endpoint_id: int,
    options: ReconcileOptions | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Converge one endpoint; returns what the pass ended with (for logs and tests)."""
    opts = options or ReconcileOptions()
    with session_scope(factory) as session:
        endpoint = session.get(Endpoint, endpoint_id)
        if endpoint is None:
            return "gone"
        status, generation = endpoint.status, endpoint.generation
    try:
        if status == EndpointStatus.DELETING:
            return _delete(factory, endpoint_id, generation, opts, clock, sleep)
        if status in (EndpointStatus.FAILED, EndpointStatus.OUT_OF_SERVICE):
            _stop_replicas(factory, endpoint_id)
            return status.value
        outcome = _converge(factory, endpoint_id, generation, opts, clock, sleep)
        if outcome == ROLLING_BACK:
            # The failed update's old config is the desired state again: converge back to it.
            with session_scope(factory) as session:
                endpoint = session.get(Endpoint, endpoint_id)
                if endpoint is None:
                    return "gone"
                generation = endpoint.generation
            outcome = _converge(factory, endpoint_id, generation, opts, clock, sleep)
        return outcome
    except _Superseded:
        return "superseded"


def _check_generation(session: Session, endpoint_id: int, generation: int) -> Endpoint:
    endpoint = session.get(Endpoint, endpoint_id)
    if endpoint is None or endpoint.generation != generation:
        raise _Superseded()
    return endpoint


def _stop_replicas(factory: sessionmaker[Session], endpoint_id: int) -> None:
    with session_scope(factory) as session:
        for replica in session.scalars(select(Replica).where(Replica.endpoint_id == endpoint_id)):
            replica.desired_state = "stopped"


def _delete(
    factory: sessionmaker[Session],
    endpoint_id: int,
    generation: int,
    opts: ReconcileOptions,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> str:
    _stop_replicas(factory, endpoint_id)
    deadline = clock() + opts.stop_timeout
    while True:
        with session_scope(factory) as session:
            _check_generation(session, endpoint_id, generation)
            live = {h.id for h in placement.live_hosts(session, opts.heartbeat_timeout)}
            waiting = [
                r
                for r in session.scalars(select(Replica).where(Replica.endpoint_id == endpoint_id))
                if r.state not in DONE_STATES and r.host_id in live and r.pid is not None
            ]
        if not waiting or clock() > deadline:
            break
        sleep(opts.poll_interval)
    with session_scope(factory) as session:
        endpoint = _check_generation(session, endpoint_id, generation)
        session.execute(delete(Tag).where(Tag.resource_arn == endpoint.arn, Tag.account_id == endpoint.account_id))
        session.execute(delete(Replica).where(Replica.endpoint_id == endpoint_id))
        endpoint_status.deleted(session, endpoint)
        session.delete(endpoint)
    return "deleted"


def _fail(factory: sessionmaker[Session], endpoint_id: int, generation: int, reason: str) -> str:
    with session_scope(factory) as session:
        endpoint = _check_generation(session, endpoint_id, generation)
        if endpoint.status == EndpointStatus.CREATING:
            for replica in session.scalars(select(Replica).where(Replica.endpoint_id == endpoint_id)):
                replica.desired_state = "stopped"
            for variant in endpoint.variants:
                variant.variant_status = None
            endpoint_status.transition(session, endpoint, EndpointStatus.FAILED, failure_reason=reason)
            return "failed"
        previous = endpoint.extra.get(endpoints.PREVIOUS)
        if previous:
            # A failed update goes back to the old config and keeps serving (API_EndpointMetadata):
            # restore the old desired state; the next pass brings it back and keeps the reason.
            specs = [endpoints.VariantSpec.from_json(v) for v in previous["ProductionVariants"]]
            endpoints.apply_specs(endpoint, previous["EndpointConfigName"], specs)
            # The old config's echoed members (its live capture config among them) come back with it.
            kept = {k: v for k, v in endpoint.extra.items() if k not in (endpoints.PREVIOUS, *endpoints.CONFIG_ECHO)}
            endpoint.extra = {
                **kept,
                **(previous.get("ConfigEcho") or {}),
                ROLLBACK_REASON: reason[:FAILURE_REASON_MAX],
            }
            endpoint.generation += 1
            return ROLLING_BACK
        for variant in endpoint.variants:
            variant.variant_status = None
        endpoint_status.transition(session, endpoint, EndpointStatus.IN_SERVICE, failure_reason=reason)
    return "failed"


def container_hash(container: dict[str, object]) -> str:
    """Identify what a replica runs, so a changed model gets fresh replicas (blue/green)."""
    return hashlib.sha256(json.dumps(container, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ReplicaLayoutError(Exception):
    """The variant asks for replicas its instance type cannot hold (NeuronCores or vCPUs)."""


WORKERS_ENV = "SAGEMAKER_MODEL_SERVER_WORKERS"


def replica_groups(variant: EndpointVariant) -> list[list[int]]:
    """NeuronCore groups of one instance (instance-local core ids): one replica process per group.

    Off Inferentia an instance runs ``SAGEMAKER_MODEL_SERVER_WORKERS`` replicas (the SageMaker
    inference toolkit's worker count; default 1, at most the instance's vCPUs) with no cores. On
    ml.inf1.* each replica owns ``NEURON_RT_NUM_CORES`` contiguous cores (default 1, 0 = all), as
    libnrt allocates them.
    """
    chips = chips_for(variant.instance_type)
    if chips == 0:
        return [[] for _ in range(_workers(variant))]
    cores = chips * CORES_PER_CHIP
    raw = str((variant.container.get("Environment") or {}).get("NEURON_RT_NUM_CORES", "1")).strip() or "1"
    try:
        per_replica = int(raw)
    except ValueError as exc:
        raise ReplicaLayoutError(f"NEURON_RT_NUM_CORES must be an integer, got {raw!r}.") from exc
    per_replica = cores if per_replica == 0 else per_replica
    if per_replica < 0 or per_replica > cores:
        raise ReplicaLayoutError(
            f"NRT:nrt_allocate_neuron_cores NeuronCore(s) not available - Requested:{per_replica} "
            f"Available:{cores} ({variant.instance_type} has {cores} NeuronCores)."
        )
    return [list(range(g * per_replica, (g + 1) * per_replica)) for g in range(cores // per_replica)]


def _workers(variant: EndpointVariant) -> int:
    raw = str((variant.container.get("Environment") or {}).get(WORKERS_ENV, "1")).strip() or "1"
    entry = catalog.get(variant.instance_type)
    vcpus = entry.vcpus if entry is not None else 1
    if not raw.isdigit() or not 1 <= int(raw) <= vcpus:
        raise ReplicaLayoutError(
            f"{WORKERS_ENV} must be an integer from 1 to {vcpus} (the vCPUs of {variant.instance_type}), got {raw!r}."
        )
    return int(raw)


def _free_chip_range(host: Host, used: set[int], count: int) -> list[int] | None:
    """First contiguous run of ``count`` free chips on the host (an instance's chips are adjacent)."""
    for start in range(0, host.chips - count + 1):
        run = list(range(start, start + count))
        if not used.intersection(run):
            return run
    return None


def _place(session: Session, endpoint: Endpoint, opts: ReconcileOptions) -> None:
    """Create or move replica rows so each variant runs its desired instances of its current model.

    An instance is a set of replica rows (one per NeuronCore group) on one host, on adjacent chips.
    Replicas of a variant's previous model keep serving; the new ones start as standby and take
    traffic only when all of them are ready (``_flip``).
    """
    hosts = placement.live_hosts(session, opts.heartbeat_timeout)
    by_id = {h.id: h for h in hosts}
    all_replicas = list(session.scalars(select(Replica).where(Replica.desired_state == "running")))
    variant_types = {
        vid: kind for vid, kind in session.execute(select(EndpointVariant.id, EndpointVariant.instance_type))
    }
    # Chips count once per instance: charge them to the instance's first group only.
    chips = {
        r.id: chips_for(variant_types.get(r.variant_id, "")) if not r.extra.get("group") else 0 for r in all_replicas
    }
    used_chips: dict[str, set[int]] = {}
    for r in all_replicas:
        used_chips.setdefault(r.host_id, set()).update(r.extra.get("chips") or [])

    # Each variant's view of the hosts, summed once and kept current as instances are placed: summing
    # every running replica per instance made placing N instances cost N × (replicas in the fleet).
    capacities: dict[int, list[placement.HostCapacity]] = {}

    def allocate(variant: EndpointVariant, rows: int) -> tuple[str, list[int]]:
        need = chips_for(variant.instance_type)
        if variant.id not in capacities:
            capacities[variant.id] = placement.capacities(hosts, all_replicas, chips, variant.id)
        candidates = capacities[variant.id]
        while candidates:
            choice = placement.choose_host(candidates, need)
            run = _free_chip_range(by_id[choice.host_id], used_chips.get(choice.host_id, set()), need) if need else []
            if run is not None:
                used_chips.setdefault(choice.host_id, set()).update(run)
                for caps in capacities.values():
                    for cap in caps:
                        if cap.host_id == choice.host_id:
                            cap.used_chips += need
                choice.replicas_of_variant += rows
                return choice.host_id, run
            candidates = [c for c in candidates if c.host_id != choice.host_id]
        raise placement.InsufficientCapacity(
            f"InsufficientInstanceCapacity: no live host has {need} adjacent free emulated Inferentia chip(s) "
            f"for {variant.instance_type}."
        )

    for variant in endpoint.variants:
        want = container_hash(variant.container)
        groups = replica_groups(variant)
        rows = list(session.scalars(select(Replica).where(Replica.variant_id == variant.id).order_by(Replica.ordinal)))
        for r in rows:
            if not r.extra.get("container_hash"):
                _set_extra(r, container_hash=want, instance=r.ordinal, group=0)
        old_serving = any(r.extra["container_hash"] != want and r.desired_state == "running" for r in rows)
        instances: dict[int, list[Replica]] = {}
        for r in rows:
            if r.extra["container_hash"] == want and r.desired_state == "running":
                instances.setdefault(int(r.extra.get("instance", r.ordinal)), []).append(r)
        keep = sorted(instances)[: variant.desired_instance_count]
        for index, members in instances.items():
            if index not in keep:
                for r in members:
                    r.desired_state = "stopped"
        next_ordinal = max((r.ordinal for r in rows), default=-1) + 1
        next_instance = max((int(r.extra.get("instance", r.ordinal)) for r in rows), default=-1) + 1

        def add_rows(
            instance: int,
            host_id: str,
            chip_run: list[int],
            group_ids: list[int],
            *,
            variant: EndpointVariant = variant,
            want: str = want,
            old_serving: bool = old_serving,
            groups: list[list[int]] = groups,
        ) -> None:
            nonlocal next_ordinal
            for g in group_ids:
                replica = Replica(
                    endpoint_id=endpoint.id,
                    variant_id=variant.id,
                    host_id=host_id,
                    ordinal=next_ordinal,
                    desired_state="running",
                    extra=_group_extra(want, old_serving, instance, g, groups, chip_run),
                )
                next_ordinal += 1
                session.add(replica)
                session.flush()
                all_replicas.append(replica)
                chips[replica.id] = chips_for(variant.instance_type) if g == 0 else 0

        for index in keep:
            members = instances[index]
            host_id = members[0].host_id
            if host_id not in by_id:
                # Its host stopped heartbeating: move the whole instance (SystemUpdating on SageMaker).
                new_host, run = allocate(variant, len(members))
                for r in members:
                    g = int(r.extra.get("group", 0))
                    r.host_id, r.state, r.pid, r.address = new_host, ReplicaState.PENDING, None, None
                    r.extra = _group_extra(want, bool(r.extra.get("standby")), index, g, groups, run)
                host_id = new_host
            present = {int(r.extra.get("group", 0)) for r in members}
            missing = [g for g in range(len(groups)) if g not in present]
            if missing:
                add_rows(index, host_id, list(members[0].extra.get("chips") or []), missing)
        for _ in range(variant.desired_instance_count - len(keep)):
            host_id, run = allocate(variant, len(groups))
            add_rows(next_instance, host_id, run, list(range(len(groups))))
            next_instance += 1


def _group_extra(
    want: str, standby: bool, instance: int, group: int, groups: list[list[int]], chip_run: list[int]
) -> dict[str, object]:
    extra: dict[str, object] = {"container_hash": want, "standby": standby, "instance": instance, "group": group}
    if chip_run:
        base = chip_run[0] * CORES_PER_CHIP
        extra.update(
            chips=chip_run,
            cores=[base + c for c in groups[group]],
            replicas_per_instance=len(groups),
        )
    return extra


def _set_extra(replica: Replica, **values: object) -> None:
    replica.extra = {**replica.extra, **values}


def _flip(session: Session, endpoint: Endpoint) -> bool:
    """Move traffic to the current replicas in one transaction and stop the old ones.

    Returns whether anything changed (False when there was nothing to flip).
    """
    changed = False
    for variant in endpoint.variants:
        want = container_hash(variant.container)
        for r in session.scalars(select(Replica).where(Replica.variant_id == variant.id)):
            if r.extra.get("container_hash") == want and r.desired_state == "running":
                if r.extra.get("standby"):
                    _set_extra(r, standby=False)
                    changed = True
            elif r.desired_state == "running":
                r.desired_state = "stopped"
                changed = True
    return changed


def _failure_reason(variant: EndpointVariant, replica: Replica) -> str:
    reason = (
        f"The primary container for production variant {variant.name} did not pass the ping health check: "
        f"{replica.failure_reason or 'the replica exited'}"
    )
    if replica.log_tail:
        reason += f" Last log lines: {replica.log_tail.strip()[-600:]}"
    return reason


def _converge(
    factory: sessionmaker[Session],
    endpoint_id: int,
    generation: int,
    opts: ReconcileOptions,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> str:
    # 0. An accepted UpdateEndpoint becomes the desired state (the old one is kept for rollback).
    with session_scope(factory) as session:
        endpoint = _check_generation(session, endpoint_id, generation)
        if endpoint.status == EndpointStatus.UPDATING and endpoints.pending_update(endpoint) is not None:
            endpoints.apply_pending_update(session, endpoint)
    # 1. Images first: an unsupported one fails the endpoint before anything starts.
    with session_scope(factory) as session:
        endpoint = _check_generation(session, endpoint_id, generation)
        for variant in endpoint.variants:
            try:
                resolve_image(variant.container.get("Image"))
            except UnsupportedImageError as exc:
                session.rollback()
                return _fail(factory, endpoint_id, generation, f"Production variant {variant.name}: {exc}")
    # 2. Place replicas, waiting a little for a host agent to come up.
    capacity_deadline = clock() + opts.capacity_wait
    while True:
        try:
            with session_scope(factory) as session:
                endpoint = _check_generation(session, endpoint_id, generation)
                _place(session, endpoint, opts)
            break
        except ReplicaLayoutError as exc:
            return _fail(factory, endpoint_id, generation, str(exc))
        except placement.InsufficientCapacity as exc:
            if clock() > capacity_deadline:
                return _fail(factory, endpoint_id, generation, str(exc))
            sleep(opts.poll_interval * 4)
        except IntegrityError:
            # Another pass of this endpoint (a starting worker's re-send beside the API's own send)
            # inserted the same replica first; placing again reads its rows and adds nothing twice.
            if clock() > capacity_deadline:
                raise
    # 3. Wait for every desired replica to report Ready (or one to fail).
    deadline = clock() + opts.startup_timeout
    while True:
        with session_scope(factory) as session:
            endpoint = _check_generation(session, endpoint_id, generation)
            pending = 0
            for variant in endpoint.variants:
                want = container_hash(variant.container)
                replicas = session.scalars(
                    select(Replica).where(Replica.variant_id == variant.id, Replica.desired_state == "running")
                )
                for replica in replicas:
                    if replica.extra.get("container_hash") != want:
                        continue
                    if replica.state == ReplicaState.FAILED:
                        reason = _failure_reason(variant, replica)
                        session.rollback()
                        return _fail(factory, endpoint_id, generation, reason)
                    if replica.state != ReplicaState.READY:
                        pending += 1
            if pending == 0:
                flipped = _flip(session, endpoint)
                if not flipped:
                    _mark_in_service(session, endpoint)
                    _forget_stopped(session, endpoint_id)
                    return "InService"
        if pending == 0:
            # Traffic moved in the commit above; API processes see it at their next routing refresh.
            # Report InService only after that, so no request reaches the old model afterwards.
            sleep(ROUTE_PROPAGATION_SECONDS)
            with session_scope(factory) as session:
                endpoint = _check_generation(session, endpoint_id, generation)
                _mark_in_service(session, endpoint)
                _forget_stopped(session, endpoint_id)
            return "InService"
        if clock() > deadline:
            return _fail(
                factory,
                endpoint_id,
                generation,
                f"Timed out after {opts.startup_timeout:.0f} s waiting for {pending} replica(s) to pass the ping "
                "health check.",
            )
        sleep(opts.poll_interval)


def _mark_in_service(session: Session, endpoint: Endpoint) -> None:
    now = utcnow()
    for variant in endpoint.variants:
        image = resolve_image(variant.container.get("Image"))
        variant.current_instance_count = variant.desired_instance_count
        variant.current_weight = variant.desired_weight
        variant.variant_status = None
        variant.status_message = None
        variant.extra = {
            **variant.extra,
            "deployed_images": [
                {
                    "SpecifiedImage": image.specified,
                    "ResolvedImage": image.resolved,
                    "ResolutionTime": now.timestamp(),
                }
            ],
        }
    rollback_reason = endpoint.extra.get(ROLLBACK_REASON)
    extra = {k: v for k, v in endpoint.extra.items() if k not in (ROLLBACK_REASON, endpoints.PREVIOUS)}
    if extra != endpoint.extra:
        endpoint.extra = extra
    reason = str(rollback_reason) if rollback_reason else None
    endpoint_status.transition(session, endpoint, EndpointStatus.IN_SERVICE, failure_reason=reason)


def _forget_stopped(session: Session, endpoint_id: int) -> None:
    session.execute(
        delete(Replica).where(
            Replica.endpoint_id == endpoint_id,
            Replica.desired_state == "stopped",
            Replica.state.in_([s.value for s in DONE_STATES]),
        )
    )


def endpoints_needing_reconcile(session: Session) -> list[int]:
    """Endpoints in a transitional state: re-enqueued when a worker starts (crash recovery)."""
    transitional = (
        EndpointStatus.CREATING,
        EndpointStatus.UPDATING,
        EndpointStatus.SYSTEM_UPDATING,
        EndpointStatus.DELETING,
    )
    return list(session.scalars(select(Endpoint.id).where(Endpoint.status.in_([s.value for s in transitional]))))
