"""SageMaker Endpoints: store the desired state and hand it to the reconciler after commit.

Every change of desired state bumps ``Endpoint.generation`` and enqueues
``dispatch.RECONCILE_ENDPOINT`` with the endpoint id. An UpdateEndpoint is stored, resolved, in
``endpoint.extra["pending"]`` (see ``PendingUpdate``) until the reconciler applies it with
``apply_pending_update`` or drops it with ``discard_pending_update``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from neurondock_platform import dispatch
from neurondock_platform.db import utcnow
from neurondock_platform.errors import AlreadyExistsError, NotFoundError, ValidationException
from neurondock_platform.models import (
    Endpoint,
    EndpointConfig,
    EndpointStatus,
    EndpointVariant,
    VariantStatus,
)
from neurondock_platform.services import (
    arns,
    endpoint_configs,
    endpoint_status,
    models,
    pagination,
    sandbox,
    tags,
    validation,
)
from neurondock_platform.services.validation import MISSING, invalid, item_path

KIND = "endpoint"
SORT_COLUMNS = {"Name": Endpoint.name, "CreationTime": Endpoint.created_at, "Status": Endpoint.status}
PENDING = "pending"
PREVIOUS = "previous"
# Config members an endpoint echoes in DescribeEndpoint, snapshotted when it (re)deploys a config.
# DataCaptureConfig is the endpoint's live capture config (docs/data-capture.md).
CONFIG_ECHO = ("AsyncInferenceConfig", "ExplainerConfig", "DataCaptureConfig")
CAPTURE = "DataCaptureConfig"
IN_PROGRESS = frozenset(
    {
        EndpointStatus.CREATING,
        EndpointStatus.UPDATING,
        EndpointStatus.SYSTEM_UPDATING,
        EndpointStatus.ROLLING_BACK,
        EndpointStatus.DELETING,
    }
)
RETAINABLE = ("DesiredInstanceCount", "DesiredWeight", CAPTURE)


@dataclass(frozen=True)
class VariantSpec:
    """One production variant resolved against its model: what the reconciler deploys."""

    name: str
    model_name: str
    instance_type: str
    instance_count: int
    weight: float
    container: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "VariantName": self.name,
            "ModelName": self.model_name,
            "InstanceType": self.instance_type,
            "DesiredInstanceCount": self.instance_count,
            "DesiredWeight": self.weight,
            "Container": self.container,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VariantSpec:
        return cls(
            name=data["VariantName"],
            model_name=data["ModelName"],
            instance_type=data["InstanceType"],
            instance_count=int(data["DesiredInstanceCount"]),
            weight=float(data["DesiredWeight"]),
            container=dict(data["Container"]),
        )


@dataclass(frozen=True)
class PendingUpdate:
    """An accepted UpdateEndpoint not yet applied: the target config and its resolved variants."""

    config_name: str
    variants: list[VariantSpec]
    started_at: dt.datetime
    config_echo: dict[str, Any]
    deployment_config: dict[str, Any] | None


def endpoint_arn(region: str, account_id: str, name: str) -> str:
    return arns.make_arn(region, account_id, KIND, name)


def _enqueue(session: Session, endpoint: Endpoint) -> None:
    session.flush()
    dispatch.enqueue_after_commit(session, dispatch.RECONCILE_ENDPOINT, endpoint.id)


def resolve_variants(session: Session, *, account_id: str, region: str, config: EndpointConfig) -> list[VariantSpec]:
    """Resolve a config's variants against the caller's models (``Could not find model`` if one is gone)."""
    specs = []
    for variant in config.production_variants:
        model = models.get_model(session, account_id=account_id, region=region, name=variant["ModelName"])
        specs.append(
            VariantSpec(
                name=variant["VariantName"],
                model_name=model.name,
                instance_type=variant["InstanceType"],
                instance_count=int(variant["InitialInstanceCount"]),
                weight=float(variant.get("InitialVariantWeight", endpoint_configs.DEFAULT_WEIGHT)),
                container=models.container_snapshot(model),
            )
        )
    return specs


def _config_echo(config: EndpointConfig) -> dict[str, Any]:
    return {key: config.extra[key] for key in CONFIG_ECHO if config.extra.get(key) is not None}


def create_endpoint(
    session: Session,
    *,
    account_id: str,
    region: str,
    name: str,
    config_name: str,
    deployment_config: dict[str, Any] | None = None,
    tag_list: list[dict[str, Any]] | None = None,
) -> Endpoint:
    """CreateEndpoint: commit ``Creating`` with one variant per ProductionVariant, then reconcile."""
    if tag_list:
        validation.check_tags(tag_list)
    arn = endpoint_arn(region, account_id, name)
    if find_endpoint(session, account_id, arn) is not None:
        raise AlreadyExistsError(kind=KIND, arn=arn)
    config = endpoint_configs.get_endpoint_config(session, account_id=account_id, region=region, name=config_name)
    specs = resolve_variants(session, account_id=account_id, region=region, config=config)
    sandbox.require_sandbox_for(session, account_id, "deploy an endpoint")
    extra = _config_echo(config)
    if deployment_config:
        extra["DeploymentConfig"] = deployment_config
    endpoint = Endpoint(
        account_id=account_id,
        name=name,
        arn=arn,
        endpoint_config_name=config.name,
        status=EndpointStatus.CREATING,
        extra=extra,
    )
    now = utcnow()
    endpoint.variants = [_new_variant(spec, index, now) for index, spec in enumerate(specs)]
    session.add(endpoint)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent create of the same name won the race
        session.rollback()
        raise AlreadyExistsError(kind=KIND, arn=arn) from exc
    endpoint_status.created(session, endpoint)
    tags.delete_all(session, account_id, arn)
    if tag_list:
        tags.set_tags(session, account_id, arn, tag_list)
    _enqueue(session, endpoint)
    return endpoint


def _new_variant(spec: VariantSpec, position: int, now: dt.datetime) -> EndpointVariant:
    variant = EndpointVariant(name=spec.name, current_instance_count=0, current_weight=0.0)
    _apply_spec(variant, spec, position)
    variant.variant_status = VariantStatus.CREATING
    variant.status_started_at = now
    return variant


def _apply_spec(variant: EndpointVariant, spec: VariantSpec, position: int) -> None:
    variant.position = position
    variant.model_name = spec.model_name
    variant.container = spec.container
    variant.instance_type = spec.instance_type
    variant.desired_instance_count = spec.instance_count
    variant.desired_weight = spec.weight


def is_async(endpoint: Endpoint) -> bool:
    """Whether the endpoint serves InvokeEndpointAsync (its variants may then scale to 0, docs/async.md)."""
    return bool(endpoint.extra.get("AsyncInferenceConfig"))


def find_endpoint(session: Session, account_id: str, arn: str) -> Endpoint | None:
    """Return the caller's endpoint with this ARN, or None."""
    return session.scalar(select(Endpoint).where(Endpoint.account_id == account_id, Endpoint.arn == arn))


def get_endpoint(session: Session, *, account_id: str, region: str, name: str) -> Endpoint:
    """Return the caller's endpoint; raise ``Could not find endpoint "arn"`` when missing."""
    arn = endpoint_arn(region, account_id, name)
    endpoint = find_endpoint(session, account_id, arn)
    if endpoint is None:
        raise NotFoundError(kind=KIND, arn=arn)
    return endpoint


def delete_endpoint(session: Session, *, account_id: str, region: str, name: str) -> Endpoint:
    """DeleteEndpoint: mark ``Deleting`` and reconcile (which stops replicas and removes the row).

    Deleting an endpoint already Deleting changes nothing but enqueues the reconcile again, so a
    lost task cannot leave it stuck.
    """
    endpoint = get_endpoint(session, account_id=account_id, region=region, name=name)
    if endpoint.status != EndpointStatus.DELETING:
        endpoint.generation += 1
        endpoint.extra = {k: v for k, v in endpoint.extra.items() if k != PENDING}
        endpoint_status.transition(session, endpoint, EndpointStatus.DELETING)
        # As on SageMaker, the variants' scalable targets (and their policies) go with the endpoint.
        from neurondock_platform.services.autoscaling import targets

        targets.deregister_for_endpoint(session, account_id=account_id, endpoint_name=endpoint.name, now=utcnow())
    _enqueue(session, endpoint)
    return endpoint


def _require_updatable(endpoint: Endpoint) -> None:
    if endpoint.status == EndpointStatus.IN_SERVICE:
        return
    if endpoint.status in IN_PROGRESS:
        raise ValidationException(f'Cannot update in-progress endpoint "{endpoint.arn}".')
    if endpoint.status == EndpointStatus.FAILED:
        raise ValidationException(f'Cannot update failed endpoint "{endpoint.arn}". Delete it and create it again.')
    raise ValidationException(f'Cannot update endpoint "{endpoint.arn}" while its status is {endpoint.status}.')


def update_endpoint(
    session: Session,
    *,
    account_id: str,
    region: str,
    name: str,
    config_name: str,
    retain_all_variant_properties: bool = False,
    exclude_retained_variant_properties: Iterable[str] = (),
    deployment_config: dict[str, Any] | None = None,
    retain_deployment_config: bool = False,
) -> Endpoint:
    """UpdateEndpoint: store the resolved target config as pending, mark ``Updating`` and reconcile."""
    endpoint = get_endpoint(session, account_id=account_id, region=region, name=name)
    sandbox.require_sandbox_for(session, account_id, "update an endpoint")
    _require_updatable(endpoint)
    config = endpoint_configs.get_endpoint_config(session, account_id=account_id, region=region, name=config_name)
    if is_async(endpoint) and not config.extra.get("AsyncInferenceConfig"):
        # An async endpoint stays async (SageMaker's wording, docs/async.md).
        raise ValidationException(f"The AsyncInferenceConfig parameter cannot be removed from this endpoint {name}.")
    specs = resolve_variants(session, account_id=account_id, region=region, config=config)
    # An autoscaled variant may change its model, not its instance type (docs/autoscaling.md).
    from neurondock_platform.services.autoscaling import targets

    targets.check_update(
        session,
        account_id=account_id,
        endpoint_name=endpoint.name,
        new_types={spec.name: spec.instance_type for spec in specs},
        old_types={v.name: v.instance_type for v in endpoint.variants},
    )
    echo = _config_echo(config)
    if retain_all_variant_properties:
        excluded = set(exclude_retained_variant_properties)
        specs = _retain(endpoint, specs, excluded)
        if CAPTURE not in excluded:
            # The live capture config stays, whatever the new config says (or lacks).
            echo.pop(CAPTURE, None)
            if endpoint.extra.get(CAPTURE):
                echo[CAPTURE] = endpoint.extra[CAPTURE]
    if deployment_config is None and retain_deployment_config:
        deployment_config = endpoint.extra.get("DeploymentConfig")
    pending = {
        "EndpointConfigName": config.name,
        "StartTime": utcnow().timestamp(),
        "ProductionVariants": [spec.to_json() for spec in specs],
        "ConfigEcho": echo,
        "DeploymentConfig": deployment_config,
    }
    endpoint.extra = {**endpoint.extra, PENDING: pending}
    endpoint.generation += 1
    endpoint_status.transition(session, endpoint, EndpointStatus.UPDATING, "UpdateEndpoint")
    _enqueue(session, endpoint)
    return endpoint


def _retain(endpoint: Endpoint, specs: list[VariantSpec], excluded: set[str]) -> list[VariantSpec]:
    # RetainAllVariantProperties keeps the running variants' counts and weights unless excluded.
    current = {v.name: v for v in endpoint.variants}
    retained = []
    for spec in specs:
        live = current.get(spec.name)
        if live is not None:
            spec = VariantSpec(
                name=spec.name,
                model_name=spec.model_name,
                instance_type=spec.instance_type,
                instance_count=spec.instance_count
                if "DesiredInstanceCount" in excluded
                else live.desired_instance_count,
                weight=spec.weight if "DesiredWeight" in excluded else live.desired_weight,
                container=spec.container,
            )
        retained.append(spec)
    return retained


def update_weights_and_capacities(
    session: Session, *, account_id: str, region: str, name: str, desired: list[dict[str, Any]]
) -> Endpoint:
    """UpdateEndpointWeightsAndCapacities: set desired weights/counts of named variants and reconcile."""
    endpoint = get_endpoint(session, account_id=account_id, region=region, name=name)
    _require_updatable(endpoint)
    path = "desiredWeightsAndCapacities"
    validation.check_unique_names(desired, "VariantName", path)
    current = {v.name: v for v in endpoint.variants}
    unknown = [d["VariantName"] for d in desired if d["VariantName"] not in current]
    if unknown:
        names = ", ".join(f'"{n}"' for n in unknown)
        raise ValidationException(f'The variant name(s) {names} is/are not present in endpoint "{endpoint.arn}".')
    errors = validation.Errors()
    for index, item in enumerate(desired):
        item_at = item_path(path, index)
        if item.get("ServerlessUpdateConfig") is not None:
            errors.add(
                item["ServerlessUpdateConfig"],
                f"{item_at}.serverlessUpdateConfig",
                "Serverless is not supported by neurondock",
            )
        if item.get("DesiredWeight") is None and item.get("DesiredInstanceCount") is None:
            errors.add(MISSING, f"{item_at}.desiredWeight", "Give DesiredWeight, DesiredInstanceCount or both")
        if item.get("DesiredInstanceCount") == 0 and not is_async(endpoint):
            errors.add(0, f"{item_at}.desiredInstanceCount", "Member must have value greater than or equal to 1")
    errors.raise_if_any()
    weights = {v.name: v.desired_weight for v in endpoint.variants}
    weights.update({d["VariantName"]: float(d["DesiredWeight"]) for d in desired if d.get("DesiredWeight") is not None})
    if sum(weights.values()) <= 0:
        raise invalid(
            [d.get("DesiredWeight") for d in desired],
            path,
            "The sum of the variants' weights must be greater than 0",
        )
    now = utcnow()
    for item in desired:
        variant = current[item["VariantName"]]
        if item.get("DesiredWeight") is not None:
            variant.desired_weight = float(item["DesiredWeight"])
        count = item.get("DesiredInstanceCount")
        if count is not None and int(count) != variant.desired_instance_count:
            direction = "out" if int(count) > variant.desired_instance_count else "in"
            variant.desired_instance_count = int(count)
            variant.variant_status = VariantStatus.UPDATING
            variant.status_message = f"Scaling {direction} desired instance count to {int(count)}."
            variant.status_started_at = now
    endpoint.generation += 1
    endpoint_status.transition(session, endpoint, EndpointStatus.UPDATING, "UpdateEndpointWeightsAndCapacities")
    _enqueue(session, endpoint)
    return endpoint


def pending_update(endpoint: Endpoint) -> PendingUpdate | None:
    """Return the endpoint's accepted-but-unapplied UpdateEndpoint, or None."""
    raw = endpoint.extra.get(PENDING)
    if not raw:
        return None
    return PendingUpdate(
        config_name=raw["EndpointConfigName"],
        variants=[VariantSpec.from_json(v) for v in raw["ProductionVariants"]],
        started_at=dt.datetime.fromtimestamp(raw["StartTime"], dt.UTC),
        config_echo=dict(raw.get("ConfigEcho") or {}),
        deployment_config=raw.get("DeploymentConfig"),
    )


def current_specs(endpoint: Endpoint) -> list[VariantSpec]:
    """Return the endpoint's variants as specs (e.g. to roll an update back)."""
    return [
        VariantSpec(
            name=v.name,
            model_name=v.model_name,
            instance_type=v.instance_type,
            instance_count=v.desired_instance_count,
            weight=v.desired_weight,
            container=dict(v.container),
        )
        for v in endpoint.variants
    ]


def apply_specs(endpoint: Endpoint, config_name: str, specs: list[VariantSpec]) -> None:
    """Make ``specs`` the endpoint's desired variants; rows are kept by name, others removed."""
    existing = {v.name: v for v in endpoint.variants}
    now = utcnow()
    rows = []
    for position, spec in enumerate(specs):
        row = existing.get(spec.name)
        if row is None:
            row = _new_variant(spec, position, now)
        else:
            _apply_spec(row, spec, position)
        rows.append(row)
    endpoint.variants = rows
    endpoint.endpoint_config_name = config_name


def apply_pending_update(session: Session, endpoint: Endpoint) -> PendingUpdate | None:
    """Apply the pending UpdateEndpoint to the desired state (status is left to the reconciler).

    The replaced config and variants are kept in ``endpoint.extra["previous"]`` (same shape as the
    pending entry) so a failed update can be rolled back with ``apply_specs``.
    """
    pending = pending_update(endpoint)
    if pending is None:
        return None
    previous = {
        "EndpointConfigName": endpoint.endpoint_config_name,
        "ProductionVariants": [s.to_json() for s in current_specs(endpoint)],
        "ConfigEcho": {k: endpoint.extra[k] for k in CONFIG_ECHO if k in endpoint.extra},
    }
    apply_specs(endpoint, pending.config_name, pending.variants)
    extra = {k: v for k, v in endpoint.extra.items() if k not in (PENDING, *CONFIG_ECHO)}
    extra.update(pending.config_echo)
    if pending.deployment_config:
        extra["DeploymentConfig"] = pending.deployment_config
    extra[PREVIOUS] = previous
    endpoint.extra = extra
    endpoint.touch()
    session.flush()
    return pending


def discard_pending_update(session: Session, endpoint: Endpoint, reason: str) -> None:
    """Drop a pending update that could not be applied: back to InService with a FailureReason."""
    endpoint.extra = {k: v for k, v in endpoint.extra.items() if k != PENDING}
    endpoint_status.transition(session, endpoint, EndpointStatus.IN_SERVICE, failure_reason=reason)
    session.flush()


def list_endpoints(
    session: Session,
    *,
    account_id: str,
    page: pagination.PageRequest,
    name_contains: str | None = None,
    status: str | None = None,
    created_before: dt.datetime | None = None,
    created_after: dt.datetime | None = None,
    modified_before: dt.datetime | None = None,
    modified_after: dt.datetime | None = None,
) -> pagination.Page[Endpoint]:
    """ListEndpoints with AWS's filters (NameContains is case-insensitive; time bounds are exclusive)."""
    return pagination.list_page(
        session,
        Endpoint,
        op="ListEndpoints",
        account_id=account_id,
        page=page,
        sort_columns=SORT_COLUMNS,
        name_contains=name_contains,
        created_before=created_before,
        created_after=created_after,
        lifecycle=pagination.Lifecycle(status, modified_before, modified_after),
    )


def endpoints_using_model(session: Session, *, account_id: str, model_name: str) -> list[str]:
    """Return the names of the account's endpoints with a variant that serves ``model_name``."""
    query = (
        select(Endpoint.name)
        .join(EndpointVariant, EndpointVariant.endpoint_id == Endpoint.id)
        .where(Endpoint.account_id == account_id, EndpointVariant.model_name == model_name)
        .distinct()
        .order_by(Endpoint.name)
    )
    return list(session.scalars(query))
