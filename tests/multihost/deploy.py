"""Deploying to the fleet the way a user does: upload to the store, create through one API, wait."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from tests.support.torch_models import pack_model, tiny_mlp

IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"
ROLE = "arn:aws:iam::210987654321:role/SageMakerRole"
BUCKET = "fleet-models"
BODY = json.dumps([[0.5] * 16])
WAIT = {"Delay": 0.25, "MaxAttempts": 720}


def upload_model(fleet: Any, tmp_path: Path, seed: int = 1) -> str:
    """Pack a tiny MLP, put it in the store; return its S3 URL."""
    s3 = fleet.client("s3")
    if not any(b["Name"] == BUCKET for b in s3.list_buckets().get("Buckets", [])):
        s3.create_bucket(Bucket=BUCKET)
    key = f"mlp-{seed}/model.tar.gz"
    path = pack_model(tmp_path / f"mlp-{seed}.tar.gz", tiny_mlp(seed=seed))
    s3.upload_file(str(path), BUCKET, key)
    return f"s3://{BUCKET}/{key}"


def create_endpoint(sm: Any, model_url: str, count: int, name: str | None = None, wait: bool = True) -> str:
    """Model → config → endpoint with ``count`` instances of ml.c5.large; returns the endpoint name."""
    name = name or f"ep-{uuid.uuid4().hex[:8]}"
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": IMAGE, "ModelDataUrl": model_url})
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": count,
             "InstanceType": "ml.c5.large"}
        ],
    )  # fmt: skip
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    if wait:
        sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=WAIT)
    return name


def invoke(rt: Any, name: str) -> Any:
    resp = rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Body=BODY)
    return json.loads(resp["Body"].read())


class Load:
    """Invoke an endpoint continuously through several runtime clients (one thread each), counting results."""

    def __init__(self, clients: list[Any], name: str) -> None:
        self.name = name
        self.ok = [0] * len(clients)
        self.errors: list[tuple[int, float, str]] = []
        self.stop = threading.Event()
        self.started = time.monotonic()
        self.threads = [threading.Thread(target=self._run, args=(i, c), daemon=True) for i, c in enumerate(clients)]

    def _run(self, index: int, rt: Any) -> None:
        while not self.stop.is_set():
            try:
                invoke(rt, self.name)
                self.ok[index] += 1
            except Exception as exc:
                self.errors.append((index, time.monotonic() - self.started, repr(exc)[:300]))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)
