"""The real SageMaker Python SDK v2 (package ``sagemaker<3``) against a live neurondock.

Its ``Predictor`` is handed a ``sagemaker.Session`` whose clients point at neurondock and must
predict, delete the model and delete the endpoint unmodified. Its ``Model.compile`` (Neo, ml_inf1)
and ``Model.deploy`` run too; deploy uses ``wait=False`` because the SDK sleeps 30 s before each
DescribeEndpoint (docs/sagemaker-api.md), and boto3's waiter polls quickly instead.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
import uuid
from typing import Any

import boto3
import pytest

import neurondock
from tests.support.oip import triton_client
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
    # The endpoint's lineage context, found by its source URI (ListContexts) and loaded (DescribeContext).
    context = predictor.endpoint_context()
    endpoint_arn = sm.describe_endpoint(EndpointName=name)["EndpointArn"]
    assert (context.context_name, context.context_type) == (f"{name}-aws-endpoint", "Endpoint")
    assert context.source.source_uri == endpoint_arn and context.context_arn.endswith(f":context/{name}-aws-endpoint")
    with pytest.raises(sm.exceptions.ClientError, match="NotImplemented"):
        context.models()  # associations are not kept: a clear refusal, not an empty list
    predictor.delete_model()
    predictor.delete_endpoint()
    _gone(sm, name)
    for call, kwargs in (
        (sm.describe_model, {"ModelName": deployed.name}),
        (sm.describe_endpoint_config, {"EndpointConfigName": name}),
    ):
        with pytest.raises(sm.exceptions.ClientError, match="Could not find"):
            call(**kwargs)


def test_real_model_compiles_for_inf1_and_deploys_on_neurondock(
    sagemaker_sdk, sm_session, nd_session, monkeypatch, platform
):
    import numpy as np
    import tritonclient.http
    import tritonclient.utils

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

    # Triton's client sees the compiled signature, and the static shapes are enforced before the replica.
    triton = triton_client(platform.port, platform.api_token())
    metadata = triton.get_model_metadata(name)
    assert metadata["platform"] == "neurondock_inf1_emulated"
    assert metadata["inputs"] == [{"name": "input0", "datatype": "FP32", "shape": [1, 16]}]
    assert metadata["outputs"] == [{"name": "output0", "datatype": "FP32", "shape": [1, 4]}]
    for datatype, array in (("FP64", x.astype("float64")), ("INT64", x.astype("int64")), ("FP32", np.tile(x, (2, 1)))):
        wrong = tritonclient.http.InferInput("input0", list(array.shape), datatype)
        wrong.set_data_from_numpy(array)
        with pytest.raises(tritonclient.utils.InferenceServerException) as refused:
            triton.infer(name, [wrong])
        assert refused.value.status() == "400", refused.value.message()
        assert "the model expects input0 FP32 [1, 16]" in refused.value.message()
    predictor.delete_model()
    predictor.delete_endpoint()
    _gone(sm, name)


@pytest.mark.slow
def test_real_async_predictor_on_a_neurondock_async_endpoint(sagemaker_sdk, platform, boto_session, nd_session):
    """SageMaker SDK v2's async path unmodified: deploy(async_inference_config=…), predict_async, get_result."""
    import numpy as np
    from sagemaker.async_inference import AsyncInferenceConfig, WaiterConfig
    from sagemaker.predictor_async import AsyncPredictor

    session = sagemaker_sdk.Session(
        boto_session=boto_session,
        sagemaker_client=platform.client("sagemaker"),
        sagemaker_runtime_client=platform.client("sagemaker-runtime"),
        default_bucket=nd_session.default_bucket(),
    )
    # The SDK uploads inputs and polls for results with these (it builds AWS's own otherwise).
    session.s3_client = platform.client("s3")
    session.s3_resource = boto_session.resource("s3", endpoint_url=platform.url + "/s3", region_name=REGION)
    module = _mlp(seed=13)
    package = neurondock.package_module(module, _example(), upload=True, session=nd_session)
    model = sagemaker_sdk.model.Model(
        image_uri=IMAGE, model_data=package.model_data, role=ROLE, sagemaker_session=session
    )
    prefix = f"s3://{nd_session.default_bucket()}/sm-async-{uuid.uuid4().hex[:8]}"
    config = AsyncInferenceConfig(
        output_path=f"{prefix}/out", failure_path=f"{prefix}/failed", max_concurrent_invocations_per_instance=2
    )
    assert model.deploy(1, "ml.c5.large", async_inference_config=config, wait=False) is None
    name = model.endpoint_name
    sm = session.sagemaker_client
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=WAIT)
    described = sm.describe_endpoint_config(EndpointConfigName=name)["AsyncInferenceConfig"]
    assert described == {
        "OutputConfig": {"S3OutputPath": f"{prefix}/out", "S3FailurePath": f"{prefix}/failed"},
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2},
    }

    predictor = AsyncPredictor(
        sagemaker_sdk.predictor.Predictor(
            name,
            sagemaker_session=session,
            serializer=sagemaker_sdk.serializers.JSONSerializer(),
            deserializer=sagemaker_sdk.deserializers.JSONDeserializer(),
        )
    )
    x = np.random.default_rng(4).standard_normal((2, 16)).astype("float32")
    response = predictor.predict_async(data=x.tolist())
    assert response.output_path.startswith(f"{prefix}/out/") and response.failure_path.startswith(f"{prefix}/failed/")
    # The SDK uploaded the input with its serializer's content type and sent none: the object's is used.
    got = np.array(response.get_result(WaiterConfig(max_attempts=20, delay=0.25)), dtype="float32")
    np.testing.assert_allclose(got, _expected(module, x), rtol=1e-5, atol=1e-5)
    # The SDK polls the output and the failure object on two threads and leaves the loser polling
    # until its waiter gives up (5 s here): let it finish while the platform still answers.
    for thread in threading.enumerate():
        if thread.name.endswith(("(check_output_file)", "(check_failure_file)")):
            thread.join(timeout=10)
    predictor.delete_model()
    predictor.delete_endpoint()
    _gone(sm, name)
