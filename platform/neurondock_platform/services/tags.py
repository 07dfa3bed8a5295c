"""Tags on SageMaker resources, addressed by ARN and always scoped to the caller's account."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from neurondock_platform.errors import NotFoundError, ValidationException
from neurondock_platform.models import Endpoint, EndpointConfig, Model, Tag
from neurondock_platform.services import arns, pagination, validation

# ARN kind → ORM class with ``account_id`` and ``arn`` columns; other resource kinds register here.
_RESOURCE_MODELS: dict[str, Any] = {"model": Model, "endpoint-config": EndpointConfig, "endpoint": Endpoint}


def register_resource_model(kind: str, model_cls: Any) -> None:
    """Let tags address another resource kind (e.g. ``compilation-job``) by its ARN."""
    _RESOURCE_MODELS[kind] = model_cls


def resolve_resource(session: Session, *, account_id: str, region: str, resource_arn: str) -> str:
    """Return the stored ARN of a resource the caller owns; raise NotFoundError otherwise."""
    parsed = arns.parse_arn(resource_arn)
    model_cls = _RESOURCE_MODELS.get(parsed.kind) if parsed else None
    if parsed is None or model_cls is None:
        raise NotFoundError(kind="resource", arn=resource_arn)
    kind = arns.KINDS.get(parsed.kind, parsed.kind)
    if parsed.account_id != account_id or parsed.region != region:
        raise NotFoundError(kind=kind, arn=resource_arn)
    arn = arns.make_arn(region, account_id, parsed.kind, parsed.name)
    found = session.scalar(
        select(func.count()).select_from(model_cls).where(model_cls.account_id == account_id, model_cls.arn == arn)
    )
    if not found:
        raise NotFoundError(kind=kind, arn=resource_arn)
    return arn


def set_tags(session: Session, account_id: str, arn: str, tags: list[dict[str, Any]]) -> None:
    """Add or overwrite tags on a resource the caller owns (validated shapes), keeping the 50-tag limit."""
    validation.check_tags(tags)
    existing = {
        t.key: t for t in session.scalars(select(Tag).where(Tag.account_id == account_id, Tag.resource_arn == arn))
    }
    new_keys = {t["Key"] for t in tags} - existing.keys()
    if len(existing) + len(new_keys) > validation.MAX_TAGS_PER_RESOURCE:
        raise ValidationException(
            f"Resource {arn} would have {len(existing) + len(new_keys)} tags; "
            f"at most {validation.MAX_TAGS_PER_RESOURCE} are allowed."
        )
    position = max((t.position for t in existing.values()), default=-1)
    for tag in tags:
        row = existing.get(tag["Key"])
        if row is None:
            position += 1
            row = Tag(account_id=account_id, resource_arn=arn, key=tag["Key"], position=position)
            session.add(row)
            existing[row.key] = row
        row.value = tag.get("Value", "")
    session.flush()


def add_tags(
    session: Session, *, account_id: str, region: str, resource_arn: str, tags: list[dict[str, Any]]
) -> list[dict[str, str]]:
    """AddTags: add or overwrite tags; return the tags as given."""
    arn = resolve_resource(session, account_id=account_id, region=region, resource_arn=resource_arn)
    set_tags(session, account_id, arn, tags)
    return [{"Key": t["Key"], "Value": t.get("Value", "")} for t in tags]


def list_tags(
    session: Session, *, account_id: str, region: str, resource_arn: str, page: pagination.PageRequest
) -> pagination.Page[Tag]:
    """ListTags: the resource's tags in the order they were first added."""
    arn = resolve_resource(session, account_id=account_id, region=region, resource_arn=resource_arn)
    stmt = select(Tag).where(Tag.account_id == account_id, Tag.resource_arn == arn)
    return pagination.paginate(
        session,
        stmt,
        sort_column=Tag.position,
        id_column=Tag.id,
        request=page,
        scope=pagination.fingerprint(op="ListTags", arn=arn),
    )


def delete_tags(session: Session, *, account_id: str, region: str, resource_arn: str, keys: list[str]) -> None:
    """DeleteTags: remove the named keys; keys the resource does not have are ignored."""
    arn = resolve_resource(session, account_id=account_id, region=region, resource_arn=resource_arn)
    session.execute(delete(Tag).where(Tag.account_id == account_id, Tag.resource_arn == arn, Tag.key.in_(keys)))


def delete_all(session: Session, account_id: str, arn: str) -> None:
    """Remove every tag of a resource (when it is deleted, or before one is created under its ARN)."""
    session.execute(delete(Tag).where(Tag.account_id == account_id, Tag.resource_arn == arn))
