"""Application Auto Scaling calls the tests make again and again: a variant's target, and a policy
tracking SageMaker's predefined invocations-per-instance metric."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from tests.support.torch_models import pack_model, tiny_mlp

IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"


def deploy(
    sm: Any,
    s3: Any,
    bucket: str,
    tmp: Path,
    *,
    code: dict[str, str] | None = None,
    instance_type: str = "ml.c5.large",
    environment: dict[str, str] | None = None,
    wait: Any = None,
) -> str:
    """A one-variant endpoint on one instance serving a tiny MLP (or ``code``'s handler), InService."""
    name = f"cw-{uuid.uuid4().hex[:8]}"
    path = pack_model(tmp / f"{name}.tar.gz", None if code else tiny_mlp(seed=3), code=code)
    s3.upload_file(str(path), bucket, f"{name}/model.tar.gz")
    model_data = f"s3://{bucket}/{name}/model.tar.gz"
    container = {"Image": IMAGE, "ModelDataUrl": model_data, "Environment": environment or {}}
    sm.create_model(ModelName=name, PrimaryContainer=container)
    variant = {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": instance_type}
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(
        EndpointName=name, WaiterConfig=wait or {"Delay": 0.2, "MaxAttempts": 600}
    )
    return name


def variant_target(endpoint: str, variant: str = "AllTraffic") -> dict[str, str]:
    """The three fields naming a SageMaker variant's instance count as a scalable target."""
    return {
        "ServiceNamespace": "sagemaker",
        "ResourceId": f"endpoint/{endpoint}/variant/{variant}",
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
    }


def track_invocations(aas: Any, target: dict[str, str], value: float, *, name: str = "p", **config: Any) -> Any:
    """``PutScalingPolicy``: target tracking of ``SageMakerVariantInvocationsPerInstance`` at ``value``;
    ``config`` adds fields such as ``ScaleInCooldown`` or ``DisableScaleIn``."""
    return aas.put_scaling_policy(
        PolicyName=name,
        **target,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": value,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            **config,
        },
    )
