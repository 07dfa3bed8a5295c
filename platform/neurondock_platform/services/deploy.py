"""One-step verbs for the admin API, the console and the CLI: CreateModel with one container, and
CreateEndpointConfig + CreateEndpoint as one deploy, each checked against botocore's SageMaker shapes
exactly as the SageMaker API checks it, then done by the services that own those nouns.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from neurondock_platform.db import utcnow
from neurondock_platform.errors import AlreadyExistsError
from neurondock_platform.models import Endpoint, Model
from neurondock_platform.services import endpoint_configs, models, validation
from neurondock_platform.services import endpoints as endpoint_service


def create_model(
    session: Session,
    *,
    account_id: str,
    region: str,
    name: str,
    image: str,
    model_data_url: str | None,
    environment: dict[str, str] | None = None,
    execution_role_arn: str | None = None,
) -> Model:
    """CreateModel with one container, checked exactly as the SageMaker API checks it."""
    container: dict[str, Any] = {"Image": image}
    if model_data_url:
        container["ModelDataUrl"] = model_data_url
    if environment:
        container["Environment"] = environment
    request: dict[str, Any] = {"ModelName": name, "PrimaryContainer": container}
    if execution_role_arn:
        request["ExecutionRoleArn"] = execution_role_arn
    validation.validate_input("CreateModel", request)
    return models.create_model(
        session,
        account_id=account_id,
        region=region,
        name=name,
        primary_container=container,
        execution_role_arn=execution_role_arn,
    )


def config_name_for(endpoint_name: str, now: dt.datetime | None = None) -> str:
    """Return a new endpoint-config name for a one-step deploy of ``endpoint_name`` (at most 63 chars)."""
    stamp = (now or utcnow()).strftime("%Y%m%d%H%M%S")
    return f"{endpoint_name[:48].rstrip('-')}-{stamp}"


def deploy_model(
    session: Session,
    *,
    account_id: str,
    region: str,
    name: str,
    model_name: str,
    instance_type: str,
    instance_count: int = 1,
    variant_name: str = "AllTraffic",
    config_name: str | None = None,
) -> Endpoint:
    """CreateEndpointConfig (one variant) + CreateEndpoint, checked as the SageMaker API checks them."""
    config_name = config_name or config_name_for(name)
    variant = {
        "VariantName": variant_name,
        "ModelName": model_name,
        "InstanceType": instance_type,
        "InitialInstanceCount": instance_count,
        "InitialVariantWeight": 1.0,
    }
    validation.validate_input("CreateEndpoint", {"EndpointName": name, "EndpointConfigName": config_name})
    validation.validate_input(
        "CreateEndpointConfig", {"EndpointConfigName": config_name, "ProductionVariants": [variant]}
    )
    # Refuse before the config is created, so a taken name leaves no orphan config behind.
    arn = endpoint_service.endpoint_arn(region, account_id, name)
    if endpoint_service.find_endpoint(session, account_id, arn) is not None:
        raise AlreadyExistsError(kind=endpoint_service.KIND, arn=arn)
    endpoint_configs.create_endpoint_config(
        session, account_id=account_id, region=region, name=config_name, production_variants=[variant]
    )
    return endpoint_service.create_endpoint(
        session, account_id=account_id, region=region, name=name, config_name=config_name
    )
