"""SageMaker EndpointConfigs: production variants checked against what neurondock runs."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from neurondock_platform.errors import AlreadyExistsError, NotFoundError, ValidationException
from neurondock_platform.models import EndpointConfig
from neurondock_platform.services import arns, async_inference, data_capture, models, pagination, tags, validation
from neurondock_platform.services.validation import MISSING, invalid, item_path

KIND = "endpoint-config"
NOT_FOUND_KIND = "endpoint configuration"
SORT_COLUMNS = {"Name": EndpointConfig.name, "CreationTime": EndpointConfig.created_at}
DEFAULT_WEIGHT = 1.0


def config_arn(region: str, account_id: str, name: str) -> str:
    return arns.make_arn(region, account_id, KIND, name)


def create_endpoint_config(
    session: Session,
    *,
    account_id: str,
    region: str,
    name: str,
    production_variants: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
    tag_list: list[dict[str, Any]] | None = None,
) -> EndpointConfig:
    """CreateEndpointConfig: variants must name existing models and instance types neurondock runs."""
    variants = check_variants(production_variants)
    shadow = (extra or {}).get("ShadowProductionVariants")
    if shadow:
        raise invalid(shadow, "shadowProductionVariants", "Shadow variants are not supported by neurondock")
    capture = (extra or {}).get("DataCaptureConfig")
    if capture is not None:
        data_capture.check_config(capture)
    async_config = (extra or {}).get(async_inference.CONFIG)
    if async_config is not None:
        async_inference.check_config(async_config)
    if tag_list:
        validation.check_tags(tag_list)
    arn = config_arn(region, account_id, name)
    if find_config(session, account_id, arn) is not None:
        raise AlreadyExistsError(kind=NOT_FOUND_KIND, arn=arn)
    for variant in variants:
        models.get_model(session, account_id=account_id, region=region, name=variant["ModelName"])
    config = EndpointConfig(account_id=account_id, name=name, arn=arn, production_variants=variants, extra=extra or {})
    session.add(config)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent create of the same name won the race
        session.rollback()
        raise AlreadyExistsError(kind=NOT_FOUND_KIND, arn=arn) from exc
    tags.delete_all(session, account_id, arn)
    if tag_list:
        tags.set_tags(session, account_id, arn, tag_list)
    return config


def check_variants(production_variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply neurondock's rules to shape-valid variants; return them with defaults filled in."""
    validation.check_unique_names(production_variants, "VariantName", "productionVariants")
    errors = validation.Errors()
    result = []
    for index, variant in enumerate(production_variants):
        path = item_path("productionVariants", index)
        if variant.get("ServerlessConfig") is not None:
            errors.add(
                variant["ServerlessConfig"],
                f"{path}.serverlessConfig",
                "Serverless is not supported by neurondock",
            )
        if variant.get("AcceleratorType") is not None:
            errors.add(
                variant["AcceleratorType"],
                f"{path}.acceleratorType",
                "Elastic Inference is not supported by neurondock",
            )
        for member in ("ModelName", "InstanceType", "InitialInstanceCount"):
            if variant.get(member) is None:
                errors.add(MISSING, validation.join_path(path, member), "Member must not be null")
        result.append({**variant, "InitialVariantWeight": float(variant.get("InitialVariantWeight", DEFAULT_WEIGHT))})
    errors.raise_if_any()
    for index, variant in enumerate(result):
        validation.check_instance_type(
            variant["InstanceType"], f"{item_path('productionVariants', index)}.instanceType"
        )
    if sum(v["InitialVariantWeight"] for v in result) <= 0:
        raise ValidationException(
            "1 validation error detected: the sum of InitialVariantWeight over all production variants "
            "must be greater than 0, or no variant could receive traffic."
        )
    return result


def find_config(session: Session, account_id: str, arn: str) -> EndpointConfig | None:
    """Return the caller's endpoint config with this ARN, or None."""
    return session.scalar(
        select(EndpointConfig).where(EndpointConfig.account_id == account_id, EndpointConfig.arn == arn)
    )


def get_endpoint_config(session: Session, *, account_id: str, region: str, name: str) -> EndpointConfig:
    """Return the caller's config; raise ``Could not find endpoint configuration "arn"`` when missing."""
    arn = config_arn(region, account_id, name)
    config = find_config(session, account_id, arn)
    if config is None:
        raise NotFoundError(kind=NOT_FOUND_KIND, arn=arn)
    return config


def delete_endpoint_config(session: Session, *, account_id: str, region: str, name: str) -> None:
    """DeleteEndpointConfig: allowed while endpoints use it (they keep running, as on SageMaker)."""
    config = get_endpoint_config(session, account_id=account_id, region=region, name=name)
    tags.delete_all(session, account_id, config.arn)
    session.delete(config)
    session.flush()


def list_endpoint_configs(
    session: Session,
    *,
    account_id: str,
    page: pagination.PageRequest,
    name_contains: str | None = None,
    created_before: dt.datetime | None = None,
    created_after: dt.datetime | None = None,
) -> pagination.Page[EndpointConfig]:
    """ListEndpointConfigs with AWS's filters (NameContains ignores case; time bounds are exclusive)."""
    return pagination.list_page(
        session,
        EndpointConfig,
        op="ListEndpointConfigs",
        account_id=account_id,
        page=page,
        sort_columns=SORT_COLUMNS,
        name_contains=name_contains,
        created_before=created_before,
        created_after=created_after,
    )


def config_names(session: Session, *, account_id: str, exclude: str | None = None, limit: int = 200) -> list[str]:
    """Return the account's endpoint-config names, newest first (for pickers), leaving out ``exclude``."""
    query = select(EndpointConfig.name).where(EndpointConfig.account_id == account_id)
    if exclude is not None:
        query = query.where(EndpointConfig.name != exclude)
    return list(session.scalars(query.order_by(EndpointConfig.created_at.desc()).limit(limit)))
