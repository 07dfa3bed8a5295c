"""Scalable targets: RegisterScalableTarget, DescribeScalableTargets, DeregisterScalableTarget, and the
SageMaker hooks (DeleteEndpoint deregisters; UpdateEndpoint refuses to change an autoscaled
variant's instance type; docs/autoscaling.md, "Scalable targets")."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from neurondock_platform.errors import NotFoundError
from neurondock_platform.errors import ValidationException as SageMakerValidation
from neurondock_platform.models import ScalableTarget
from neurondock_platform.services import endpoints, pagination
from neurondock_platform.services.autoscaling import activities, policies, resources
from neurondock_platform.services.autoscaling.errors import ValidationException


def register(
    session: Session,
    *,
    account_id: str,
    region: str,
    namespace: str,
    resource_id: str,
    dimension: str,
    min_capacity: int | None,
    max_capacity: int | None,
    role_arn: str | None,
    suspended: dict[str, bool] | None,
    tags: dict[str, str] | None,
    now: dt.datetime,
) -> ScalableTarget:
    """Register a variant, or update what is given of an existing registration.

    A new minimum above (or maximum below) the variant's count scales it there at once, as Application
    Auto Scaling does.
    """
    variant = resources.check_scope(namespace, resource_id, dimension)
    assert variant is not None
    try:
        endpoint = endpoints.get_endpoint(session, account_id=account_id, region=region, name=variant.endpoint)
    except NotFoundError as exc:
        raise ValidationException(exc.message) from exc
    live = next((v for v in endpoint.variants if v.name == variant.variant), None)
    if live is None:
        raise ValidationException(f'The variant "{variant.variant}" is not present in endpoint "{endpoint.arn}".')
    target = resources.find_target(session, account_id, resource_id)
    if target is None:
        if min_capacity is None or max_capacity is None:
            raise ValidationException("MinCapacity and MaxCapacity are required to register a new scalable target.")
        target = ScalableTarget(
            account_id=account_id,
            service_namespace=namespace,
            resource_id=resource_id,
            scalable_dimension=dimension,
            endpoint_name=variant.endpoint,
            variant_name=variant.variant,
            min_capacity=min_capacity,
            max_capacity=max_capacity,
            role_arn=role_arn or resources.ROLE_ARN.format(account=account_id),
            arn=resources.target_arn(region, account_id),
            tags=dict(tags or {}),
            created_at=now,
        )
        session.add(target)
    else:
        if tags:
            raise ValidationException("Tags can be given only when a scalable target is first registered.")
        if role_arn:
            target.role_arn = role_arn
    new_min = target.min_capacity if min_capacity is None else min_capacity
    new_max = target.max_capacity if max_capacity is None else max_capacity
    if new_min < 1 and not endpoints.is_async(endpoint):
        raise ValidationException(
            "MinCapacity must be at least 1: a real-time SageMaker variant keeps at least one instance "
            "(an asynchronous endpoint's variant may scale to 0)."
        )
    if new_min > new_max:
        raise ValidationException(f"Minimum capacity ({new_min}) cannot be greater than maximum capacity ({new_max}).")
    target.min_capacity, target.max_capacity = new_min, new_max
    for key, column in (
        ("DynamicScalingInSuspended", "dynamic_scaling_in_suspended"),
        ("DynamicScalingOutSuspended", "dynamic_scaling_out_suspended"),
        ("ScheduledScalingSuspended", "scheduled_scaling_suspended"),
    ):
        if suspended and suspended.get(key) is not None:
            setattr(target, column, bool(suspended[key]))
    session.flush()
    clamp(session, target, live.desired_instance_count, now, cause_prefix="")
    return target


def clamp(session: Session, target: ScalableTarget, current: int, now: dt.datetime, *, cause_prefix: str) -> None:
    """Scale a variant into its target's [min, max] when a new bound leaves it outside."""
    if current < target.min_capacity:
        desired, cause = target.min_capacity, f"{cause_prefix}minimum capacity was set to {target.min_capacity}"
    elif current > target.max_capacity:
        desired, cause = target.max_capacity, f"{cause_prefix}maximum capacity was set to {target.max_capacity}"
    else:
        return
    activities.start(
        session,
        target,
        desired=desired,
        description=f"Setting desired instance count to {desired}.",
        cause=cause,
        now=now,
    )


def describe(
    session: Session,
    *,
    account_id: str,
    namespace: str,
    resource_ids: Sequence[str],
    dimension: str | None,
    max_results: int | None,
    next_token: str | None,
) -> pagination.Page[ScalableTarget]:
    """DescribeScalableTargets: the account's targets, oldest first."""
    resources.check_scope(namespace, None, dimension)
    stmt = select(ScalableTarget).where(ScalableTarget.account_id == account_id)
    if resource_ids:
        stmt = stmt.where(ScalableTarget.resource_id.in_(list(resource_ids)))
    scope = pagination.fingerprint(op="DescribeScalableTargets", ids=sorted(resource_ids), dimension=dimension)
    return resources.page(
        session,
        stmt,
        sort_column=ScalableTarget.created_at,
        id_column=ScalableTarget.id,
        scope=scope,
        max_results=max_results,
        next_token=next_token,
    )


def deregister(
    session: Session, *, account_id: str, namespace: str, resource_id: str, dimension: str, now: dt.datetime
) -> None:
    """DeregisterScalableTarget: also deletes its policies (and their alarms) and scheduled actions."""
    target = resources.get_target(session, account_id, namespace, resource_id, dimension)
    _remove(session, target, now)


def _remove(session: Session, target: ScalableTarget, now: dt.datetime) -> None:
    for policy in list(target.policies):
        policies.remove(session, policy, now)
    session.delete(target)
    session.flush()


def for_endpoint(session: Session, *, account_id: str, endpoint_name: str) -> list[ScalableTarget]:
    """The scalable targets of an endpoint's variants."""
    return list(
        session.scalars(
            select(ScalableTarget)
            .where(ScalableTarget.account_id == account_id, ScalableTarget.endpoint_name == endpoint_name)
            .order_by(ScalableTarget.variant_name)
        )
    )


def deregister_for_endpoint(session: Session, *, account_id: str, endpoint_name: str, now: dt.datetime) -> int:
    """DeleteEndpoint's hook: deregister every target on the endpoint's variants; returns how many."""
    targets = for_endpoint(session, account_id=account_id, endpoint_name=endpoint_name)
    for target in targets:
        _remove(session, target, now)
    return len(targets)


def check_update(
    session: Session, *, account_id: str, endpoint_name: str, new_types: dict[str, str], old_types: dict[str, str]
) -> None:
    """UpdateEndpoint's hook: refuse an instance type change on a variant registered for scaling.

    Raises SageMaker's ValidationException (the call is SageMaker's; the wording is neurondock's, as
    AWS does not publish its own, docs/autoscaling.md).
    """
    changed = sorted(
        name
        for name, instance_type in new_types.items()
        if name in old_types
        and old_types[name] != instance_type
        and resources.find_target(session, account_id, f"endpoint/{endpoint_name}/variant/{name}") is not None
    )
    if changed:
        names = ", ".join(f'"{n}"' for n in changed)
        raise SageMakerValidation(
            f"The update would change the instance type of variant(s) {names} of endpoint {endpoint_name}, which "
            "is/are registered for automatic scaling. Delete the scaling policies and deregister the scalable "
            "target(s) (DeregisterScalableTarget) first; changing only the model is allowed."
        )
