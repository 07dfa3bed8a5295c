"""Async image job: a batch of images classified through InvokeEndpointAsync, results collected from S3.

The small ResNet of ``image_classifier.py`` is served uncompiled on an ``ml.c5.large`` endpoint whose
config has an ``AsyncInferenceConfig``. Each image is uploaded as NPY, queued with one
``invoke_endpoint_async`` call (202 at once, the result's S3 location in the answer), and the script
then waits for the output objects. It prints how long the queueing took beside how long the
results took, and the async metrics CloudWatch counted.

    python sdk/examples/async_image_job.py --endpoint-url http://127.0.0.1:8780
"""

from __future__ import annotations

import datetime as dt
import io
import json
import time

import _common
import numpy as np
import torch
from botocore.exceptions import ClientError
from image_classifier import CLASSES, IMAGE_SIZE, SmallResNet

from neurondock import Model, Predictor, name_from_base, package_module, waiters

INSTANCE_TYPE = "ml.c5.large"


def _s3_key(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _read(s3: object, uri: str) -> bytes | None:
    bucket, key = _s3_key(uri)
    try:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())  # type: ignore[attr-defined]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0], requests=8)
    session = _common.make_session(args)
    sm, rt, s3 = session.sagemaker_client, session.sagemaker_runtime_client, session.s3_client
    bucket = session.default_bucket()
    torch.manual_seed(0)
    model = SmallResNet().eval()
    images = np.random.default_rng(0).standard_normal((args.requests, 1, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    package = package_module(
        model, torch.from_numpy(images[0]), upload=True, session=session, key_prefix="examples/async-image/source"
    )
    name = name_from_base("example-async-image")
    Model(model_data=package.model_data, role=args.role, name=name, session=session).create()
    prefix = f"s3://{bucket}/examples/async-image/{name}"
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": INSTANCE_TYPE}
        ],
        AsyncInferenceConfig={
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2},
            "OutputConfig": {"S3OutputPath": f"{prefix}/out", "S3FailurePath": f"{prefix}/failed"},
        },
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    try:
        session.wait_for_endpoint(name)
        print(f"async endpoint {name} InService on {INSTANCE_TYPE}")
        started = time.perf_counter()
        sent = []
        for index, image in enumerate(images):
            buffer = io.BytesIO()
            np.save(buffer, image)
            key = f"examples/async-image/{name}/in/image-{index}.npy"
            s3.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
            sent.append(
                rt.invoke_endpoint_async(
                    EndpointName=name,
                    InputLocation=f"s3://{bucket}/{key}",
                    ContentType="application/x-npy",
                    Accept="application/json",
                )
            )
        queued_s = time.perf_counter() - started
        print(f"queued {len(sent)} images in {queued_s * 1e3:.0f} ms (upload + 202 each)")
        print(f"first result will be at {sent[0]['OutputLocation']}")
        results: dict[int, list[float]] = {}
        deadline = time.monotonic() + 300
        while len(results) < len(sent) and time.monotonic() < deadline:
            for index, answer in enumerate(sent):
                if index in results:
                    continue
                failure = _read(s3, answer["FailureLocation"])
                if failure is not None:
                    raise SystemExit(f"image {index} failed: {failure.decode(errors='replace')}")
                body = _read(s3, answer["OutputLocation"])
                if body is not None:
                    results[index] = json.loads(body)[0]
            time.sleep(0.2)
        done_s = time.perf_counter() - started
        if len(results) < len(sent):
            raise SystemExit(f"only {len(results)} of {len(sent)} results arrived within 300 s")
        for index in sorted(results):
            probabilities = np.array(results[index])
            top = np.argsort(probabilities)[::-1][:3]
            print(f"image {index}: top 3:", ", ".join(f"{CLASSES[i]} {probabilities[i]:.3f}" for i in top))
        expected = model(torch.from_numpy(images[:, 0])).detach().numpy()
        error = max(float(np.abs(np.array(results[i]) - expected[i]).max()) for i in results)
        print(
            f"results: {len(results)} of {len(sent)} in S3 after {done_s:.2f} s; "
            f"max |error| vs local PyTorch {error:.2g}"
        )
        _print_metrics(session.boto_session, args.endpoint_url, session.region_name, name)
    finally:
        if args.keep:
            print(f"endpoint {name} left running (--keep)")
        else:
            predictor = Predictor(name, session)
            predictor.delete_model()
            predictor.delete_endpoint()
            waiters.wait_for_endpoint_deleted(sm, name, policy=waiters.PollPolicy(progress=False))
            print(f"deleted endpoint {name}, its endpoint config and its model")


def _print_metrics(boto_session: object, endpoint_url: str | None, region: str, name: str) -> None:
    """The async metrics CloudWatch holds for the endpoint (they are written as requests finish)."""
    cw = boto_session.client("cloudwatch", endpoint_url=endpoint_url, region_name=region)  # type: ignore[attr-defined]
    now = dt.datetime.now(dt.UTC)
    dimensions = [{"Name": "EndpointName", "Value": name}, {"Name": "VariantName", "Value": "AllTraffic"}]
    for metric, statistic in (
        ("InvocationsProcesssed", "Sum"),
        ("TimeInBacklog", "Average"),
        ("TotalProcessingTime", "Average"),
    ):
        points = cw.get_metric_statistics(
            Namespace="AWS/SageMaker",
            MetricName=metric,
            Dimensions=dimensions,
            StartTime=now - dt.timedelta(minutes=15),
            EndTime=now + dt.timedelta(minutes=1),
            Period=900,
            Statistics=[statistic],
        )["Datapoints"]
        value = points[0][statistic] if points else float("nan")
        unit = points[0]["Unit"] if points else ""
        print(f"cloudwatch {metric} {statistic}: {value:.1f} {unit}")


if __name__ == "__main__":
    main()
