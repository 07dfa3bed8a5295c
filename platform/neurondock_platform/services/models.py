"""SageMaker Models: create, look up, delete and list, always within one account."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from neurondock_platform.errors import AlreadyExistsError, NotFoundError
from neurondock_platform.models import Model
from neurondock_platform.services import arns, pagination, tags, validation
from neurondock_platform.services.validation import MISSING, invalid

KIND = "model"
SORT_COLUMNS = {"Name": Model.name, "CreationTime": Model.created_at}


def model_arn(region: str, account_id: str, name: str) -> str:
    return arns.make_arn(region, account_id, KIND, name)


def create_model(
    session: Session,
    *,
    account_id: str,
    region: str,
    name: str,
    primary_container: dict[str, Any] | None = None,
    containers: list[dict[str, Any]] | None = None,
    execution_role_arn: str | None = None,
    enable_network_isolation: bool = False,
    extra: dict[str, Any] | None = None,
    tag_list: list[dict[str, Any]] | None = None,
) -> Model:
    """CreateModel: store a model whose (single) container neurondock can serve."""
    _check_containers(primary_container, containers or [])
    if tag_list:
        validation.check_tags(tag_list)
    arn = model_arn(region, account_id, name)
    if find_model(session, account_id, arn) is not None:
        raise AlreadyExistsError(kind=KIND, arn=arn)
    model = Model(
        account_id=account_id,
        name=name,
        arn=arn,
        execution_role_arn=execution_role_arn,
        primary_container=primary_container,
        containers=containers or [],
        enable_network_isolation=enable_network_isolation,
        extra=extra or {},
    )
    session.add(model)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent CreateModel of the same name won the race
        session.rollback()
        raise AlreadyExistsError(kind=KIND, arn=arn) from exc
    tags.delete_all(session, account_id, arn)
    if tag_list:
        tags.set_tags(session, account_id, arn, tag_list)
    return model


def _check_containers(primary: dict[str, Any] | None, containers: list[dict[str, Any]]) -> None:
    if primary is None and not containers:
        raise invalid(MISSING, "primaryContainer", "Member must not be null (give PrimaryContainer or Containers)")
    if primary is not None and containers:
        raise invalid(containers, "containers", "Member must be empty when PrimaryContainer is given")
    if len(containers) > 1:
        raise invalid(
            len(containers),
            "containers",
            "neurondock serves one container per model (no inference pipelines)",
        )
    path = "primaryContainer" if primary is not None else validation.item_path("containers", 0)
    container = primary if primary is not None else containers[0]
    if container.get("Mode", "SingleModel") != "SingleModel":
        raise invalid(container["Mode"], f"{path}.mode", "Multi-model containers are not supported by neurondock")
    if not container.get("Image"):
        raise invalid(MISSING, f"{path}.image", "Member must not be null")
    source = container.get("ModelDataSource")
    if source is not None and container.get("ModelDataUrl") is None:
        s3 = source.get("S3DataSource") or {}
        if s3.get("S3DataType") != "S3Object" or s3.get("CompressionType") != "Gzip":
            raise invalid(
                s3,
                f"{path}.modelDataSource.s3DataSource",
                "neurondock loads one model.tar.gz: use S3DataType S3Object with CompressionType Gzip, or ModelDataUrl",
            )


def find_model(session: Session, account_id: str, arn: str) -> Model | None:
    """Return the caller's model with this ARN, or None."""
    return session.scalar(select(Model).where(Model.account_id == account_id, Model.arn == arn))


def get_model(session: Session, *, account_id: str, region: str, name: str) -> Model:
    """Return the caller's model; raise NotFoundError (``Could not find model "arn"``) when missing."""
    arn = model_arn(region, account_id, name)
    model = find_model(session, account_id, arn)
    if model is None:
        raise NotFoundError(kind=KIND, arn=arn)
    return model


def delete_model(session: Session, *, account_id: str, region: str, name: str) -> None:
    """DeleteModel: endpoints already running it keep their container snapshot."""
    model = get_model(session, account_id=account_id, region=region, name=name)
    tags.delete_all(session, account_id, model.arn)
    session.delete(model)
    session.flush()


def primary(model: Model) -> dict[str, Any]:
    """Return the model's serving container (PrimaryContainer, else the first of Containers)."""
    if model.primary_container:
        return model.primary_container
    return model.containers[0] if model.containers else {}


def container_snapshot(model: Model) -> dict[str, Any]:
    """Return what an endpoint variant keeps of its model: Image, ModelDataUrl, Environment, ExecutionRoleArn.

    The host agent downloads ModelDataUrl with credentials of the model's account for its execution role.
    """
    container = primary(model)
    url = container.get("ModelDataUrl")
    if url is None:
        url = ((container.get("ModelDataSource") or {}).get("S3DataSource") or {}).get("S3Uri")
    snapshot: dict[str, Any] = {
        "Image": container.get("Image"),
        "ModelDataUrl": url,
        "Environment": dict(container.get("Environment") or {}),
    }
    if model.enable_network_isolation:
        # The host agent gives such a replica no network at all (docs/sandbox.md).
        snapshot["EnableNetworkIsolation"] = True
    if model.execution_role_arn:
        snapshot["ExecutionRoleArn"] = model.execution_role_arn
    return snapshot


def list_models(
    session: Session,
    *,
    account_id: str,
    page: pagination.PageRequest,
    name_contains: str | None = None,
    created_before: dt.datetime | None = None,
    created_after: dt.datetime | None = None,
) -> pagination.Page[Model]:
    """ListModels with AWS's filters (NameContains is case-insensitive; time bounds are exclusive)."""
    return pagination.list_page(
        session,
        Model,
        op="ListModels",
        account_id=account_id,
        page=page,
        sort_columns=SORT_COLUMNS,
        name_contains=name_contains,
        created_before=created_before,
        created_after=created_after,
    )


def model_names(session: Session, *, account_id: str, limit: int = 500) -> list[str]:
    """Return the account's model names in order (for pickers)."""
    query = select(Model.name).where(Model.account_id == account_id).order_by(Model.name).limit(limit)
    return list(session.scalars(query))
