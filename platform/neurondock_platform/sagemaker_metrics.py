"""The metrics neurondock publishes about endpoints: names, namespaces, units and dimensions.

SageMaker's own (docs/cloudwatch.md, "What the platform publishes"): the invocation metrics in
``AWS/SageMaker`` and the instance metrics in ``/aws/sagemaker/Endpoints``, both per
``{EndpointName, VariantName}``, with SageMaker's units. neurondock's additions live in
``neurondock/Endpoints``: per variant (throttling, queue depth, batch size, instance count) and per replica
(``ReplicaId`` added: NeuronCore utilization, neuron-monitor's inference summary).
"""

from __future__ import annotations

SAGEMAKER = "AWS/SageMaker"
INSTANCES = "/aws/sagemaker/Endpoints"
NEURONDOCK = "neurondock/Endpoints"

ENDPOINT = "EndpointName"
VARIANT = "VariantName"
REPLICA = "ReplicaId"

# metric name → (namespace, unit)
METRICS: dict[str, tuple[str, str]] = {
    "Invocations": (SAGEMAKER, "None"),
    "InvocationsPerInstance": (SAGEMAKER, "None"),
    "Invocation4XXErrors": (SAGEMAKER, "None"),
    "Invocation5XXErrors": (SAGEMAKER, "None"),
    "ModelLatency": (SAGEMAKER, "Microseconds"),
    "OverheadLatency": (SAGEMAKER, "Microseconds"),
    "ModelSetupTime": (SAGEMAKER, "Microseconds"),
    "CPUUtilization": (INSTANCES, "Percent"),
    "MemoryUtilization": (INSTANCES, "Percent"),
    "InvocationsThrottled": (NEURONDOCK, "Count"),
    "QueueDepth": (NEURONDOCK, "Count"),
    "BatchSize": (NEURONDOCK, "Count"),
    # ModelLatency of a streamed answer up to its first part (ModelLatency itself runs to the last).
    "ModelLatencyToFirstByte": (NEURONDOCK, "Microseconds"),
    # The variant's running instances as the data plane routes them, once per flush.
    "InstanceCount": (NEURONDOCK, "Count"),
    "NeuronCoreUtilization": (NEURONDOCK, "Percent"),
    # Data Capture records written and lost, per flush (docs/data-capture.md).
    "DataCaptureWritten": (NEURONDOCK, "Count"),
    "DataCaptureFailed": (NEURONDOCK, "Count"),
    "ReplicaInferenceStats": (NEURONDOCK, "Microseconds"),
    # Asynchronous inference (docs/async.md): per endpoint, sampled by the monitor every flush …
    "ApproximateBacklogSize": (SAGEMAKER, "Count"),
    "ApproximateBacklogSizePerInstance": (SAGEMAKER, "Count"),
    "ApproximateAgeOfOldestRequest": (SAGEMAKER, "Seconds"),
    "HasBacklogWithoutCapacity": (SAGEMAKER, "Count"),
    # … and per variant, one sample per finished request ("Processsed" is CloudWatch's spelling).
    "InvocationsProcesssed": (SAGEMAKER, "Count"),
    "InvocationFailures": (SAGEMAKER, "Count"),
    "ExpiredRequests": (SAGEMAKER, "Count"),
    "RequestDownloadFailures": (SAGEMAKER, "Count"),
    "ResponseUploadFailures": (SAGEMAKER, "Count"),
    "TimeInBacklog": (SAGEMAKER, "Microseconds"),
    "TotalProcessingTime": (SAGEMAKER, "Milliseconds"),
}
ASYNC_ENDPOINT_METRICS = (
    "ApproximateBacklogSize",
    "ApproximateBacklogSizePerInstance",
    "ApproximateAgeOfOldestRequest",
    "HasBacklogWithoutCapacity",
)
PER_REPLICA = frozenset({"NeuronCoreUtilization", "ReplicaInferenceStats"})

Dimensions = tuple[tuple[str, str], ...]


def namespace(metric: str) -> str:
    return METRICS[metric][0]


def unit(metric: str) -> str:
    return METRICS[metric][1]


def variant_dimensions(endpoint: str, variant: str) -> Dimensions:
    """The dimensions of a per-variant metric, in CloudWatch's canonical (sorted) order."""
    return ((ENDPOINT, endpoint), (VARIANT, variant))


def endpoint_dimensions(endpoint: str) -> Dimensions:
    """The dimensions of a per-endpoint metric (the async backlog)."""
    return ((ENDPOINT, endpoint),)


def replica_dimensions(endpoint: str, variant: str, replica_id: int) -> Dimensions:
    return ((ENDPOINT, endpoint), (REPLICA, str(replica_id)), (VARIANT, variant))


def aligned_interval(seconds: float) -> int:
    """The flush period actually used: a divisor of 60 (or a multiple of 60), so periods tile minutes."""
    if seconds >= 60:
        return int(seconds // 60) * 60
    return max(d for d in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30) if d <= max(1.0, seconds))
