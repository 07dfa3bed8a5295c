"""The real SageMaker Python SDK v2 (package ``sagemaker<3``) against a live neurondock.

Its ``Predictor`` is handed a ``sagemaker.Session`` whose clients point at neurondock and must
predict, delete the model and delete the endpoint unmodified. Its ``Model.compile`` (Neo, ml_inf1)
and ``Model.deploy`` run too; deploy uses ``wait=False`` because the SDK sleeps 30 s before each
DescribeEndpoint (sagemaker-api.md §5), and boto3's waiter polls quickly instead.
"""

from __future__ import annotations

import functools
import importlib.util
import uuid
from typing import Any

import boto3
import pytest

import neurondock
from tests.support.platform import ACCESS_KEY, ACCOUNT_ID, REGION, SECRET_KEY

ROLE = f"arn:aws:iam::{ACCOUNT_ID}:role/SageMakerRole"
IMAGE = f"763104351884.dkr.ecr.{REGION}.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"
NEURON_IMAGE = f"763104351884.dkr.ecr.{REGION}.amazonaws.com/pytorch-inference-neuron:1.13.1-neuron-py310"
WAIT = {"Delay": 0.2, "MaxAttempts": 600}

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("sagemaker") is None,
    reason="the SageMaker Python SDK v2 is not installed (it is in the dev extra: "
    "pip install -c .ci/constraints.txt -e '.[dev]')",
)


@pytest.fixture(autouse=True)
def _quiet_v2_banner(monkeypatch: pytest.MonkeyPatch) -> None:
    # v2.257 warns "on path of deprecation" on import and on first use of Model, Predictor, …; the
    # suite turns warnings into errors, and the SDK documents this variable to silence them.
    monkeypatch.setenv("SAGEMAKER_SUPPRESS_V2_WARNING", "1")


@pytest.fixture(scope="module")
def sagemaker_sdk() -> Any:
    """Import the SageMaker Python SDK v2 (its import-time banner silenced as above)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
        import sagemaker
        import sagemaker.deserializers
        import sagemaker.model
        import sagemaker.predictor
        import sagemaker.serializers
    assert sagemaker.__version__.startswith("2."), sagemaker.__version__
    return sagemaker


@pytest.fixture(scope="module")
def boto_session() -> boto3.Session:
    return boto3.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION)


@pytest.fixture(scope="module")
def nd_session(platform, boto_session) -> neurondock.Session:
    return neurondock.Session(boto_session=boto_session, endpoint_url=platform.url, poll_interval=0.1, progress=False)


@pytest.fixture(scope="module")
def sm_session(sagemaker_sdk, platform, boto_session, nd_session) -> Any:
    """A ``sagemaker.Session`` whose SageMaker and runtime clients point at neurondock."""
    return sagemaker_sdk.Session(
        boto_session=boto_session,
        sagemaker_client=platform.client("sagemaker"),
        sagemaker_runtime_client=platform.client("sagemaker-runtime"),
        # Named here so the SDK never asks STS (which it would ask at AWS) for the account id.
        default_bucket=nd_session.default_bucket(),
    )


def _mlp(seed: int) -> Any:
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4)).eval()


def _example() -> Any:
    import torch

    return torch.zeros(1, 16)


def _expected(module: Any, x: Any) -> Any:
    import torch

    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def _gone(sm: Any, name: str) -> None:
    sm.get_waiter("endpoint_deleted").wait(EndpointName=name, WaiterConfig=WAIT)


def test_real_predictor_predicts_and_deletes_a_neurondock_endpoint(sagemaker_sdk, sm_session, nd_session):
    import numpy as np

    module = _mlp(seed=11)
    # A numpy example input, as SageMaker users hold their data; the SDK traces with it all the same.
    package = neurondock.package_module(module, np.zeros((1, 16), dtype="float32"), upload=False)
    deployed = neurondock.Model(model_data=str(package.path), image_uri=IMAGE, role=ROLE, session=nd_session)
    name = deployed.deploy(1, "ml.c5.large").endpoint_name

    predictor = sagemaker_sdk.predictor.Predictor(
        name,
        sagemaker_session=sm_session,
        serializer=sagemaker_sdk.serializers.NumpySerializer(),
        deserializer=sagemaker_sdk.deserializers.NumpyDeserializer(),
    )
    x = np.random.default_rng(2).standard_normal((3, 16)).astype("float32")
    np.testing.assert_allclose(predictor.predict(x), _expected(module, x), rtol=1e-5, atol=1e-5)
    as_json = sagemaker_sdk.predictor.Predictor(
        name,
        sagemaker_session=sm_session,
        serializer=sagemaker_sdk.serializers.JSONSerializer(),
        deserializer=sagemaker_sdk.deserializers.JSONDeserializer(),
    )
    got = np.array(as_json.predict(x), dtype="float32")
    np.testing.assert_allclose(got, _expected(module, x), rtol=1e-5, atol=1e-5)

    sm = sm_session.sagemaker_client
    predictor.delete_model()
    predictor.delete_endpoint()
    _gone(sm, name)
    for call, kwargs in (
        (sm.describe_model, {"ModelName": deployed.name}),
        (sm.describe_endpoint_config, {"EndpointConfigName": name}),
    ):
        with pytest.raises(sm.exceptions.ClientError, match="Could not find"):
            call(**kwargs)


def test_real_model_compiles_for_inf1_and_deploys_on_neurondock(sagemaker_sdk, sm_session, nd_session, monkeypatch):
    import numpy as np

    module = _mlp(seed=12)
    package = neurondock.package_module(module, _example(), upload=True, session=nd_session)
    model = sagemaker_sdk.model.Model(
        image_uri=IMAGE, model_data=package.model_data, role=ROLE, sagemaker_session=sm_session
    )
    output = f"s3://{nd_session.default_bucket()}/sm-compat-{uuid.uuid4().hex[:8]}"
    # The SDK's own waiter, polling every 0.2 s instead of its default 5 s.
    waiter = functools.partial(sm_session.wait_for_compilation_job, poll=0.2)
    monkeypatch.setattr(sm_session, "wait_for_compilation_job", waiter)
    model.compile(
        target_instance_family="ml_inf1",
        input_shape={"input0": [1, 16]},
        output_path=output,
        role=ROLE,
        framework="pytorch",
        framework_version="1.13.1",
        job_name=f"sm-compat-{uuid.uuid4().hex[:8]}",
    )
    assert model.model_data == f"{output}/model-ml_inf1.tar.gz"
    assert model.image_uri == NEURON_IMAGE

    assert model.deploy(initial_instance_count=1, instance_type="ml.inf1.xlarge", wait=False) is None
    name = model.endpoint_name
    assert "-ml-inf1-" in name  # the SDK's name for a compiled model's endpoint
    sm = sm_session.sagemaker_client
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=WAIT)
    config = sm.describe_endpoint_config(EndpointConfigName=name)  # the SDK names the config after the endpoint
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.inf1.xlarge"

    predictor = sagemaker_sdk.predictor.Predictor(
        name,
        sagemaker_session=sm_session,
        serializer=sagemaker_sdk.serializers.NumpySerializer(),
        deserializer=sagemaker_sdk.deserializers.NumpyDeserializer(),
    )
    x = np.random.default_rng(3).standard_normal((1, 16)).astype("float32")
    np.testing.assert_allclose(predictor.predict(x), _expected(module, x), atol=0.05, rtol=0)
    predictor.delete_model()
    predictor.delete_endpoint()
    _gone(sm, name)
