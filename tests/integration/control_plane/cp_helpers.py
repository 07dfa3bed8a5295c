"""Constants and request builders shared by the control-plane integration tests."""

from __future__ import annotations

from typing import Any

REGION = "us-east-1"
ACCOUNT = "123456789012"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"
MODEL_DATA = "s3://models/resnet/model.tar.gz"
ENV = {"SAGEMAKER_PROGRAM": "inference.py"}


def arn(kind: str, name: str, account: str = ACCOUNT) -> str:
    return f"arn:aws:sagemaker:{REGION}:{account}:{kind}/{name.lower()}"


def variant(model: str = "m1", name: str = "AllTraffic", **overrides: Any) -> dict[str, Any]:
    v: dict[str, Any] = {
        "VariantName": name,
        "ModelName": model,
        "InstanceType": "ml.inf1.xlarge",
        "InitialInstanceCount": 1,
    }
    v.update(overrides)
    return v
