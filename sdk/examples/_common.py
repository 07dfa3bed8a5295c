"""What every example shares: arguments, the compile → deploy → measure → report loop, and clean-up.

The examples run against a neurondock (``--endpoint-url`` plus the credentials ``neurondock up`` prints)
or, with the same code and a role, against SageMaker itself. Figures about Inferentia, GPUs and c5
come from the compile report that neurondock writes beside the compiled artifact; they are
projections and are printed with the word "projected". Only the CPU latencies are measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from neurondock import Model, Predictor, Session, name_from_base, package_module, waiters
from neurondock.errors import AwsError, SdkError

TARGET = "ml_inf1"
INSTANCE_TYPE = "ml.inf1.xlarge"
# torch-neuron's last release line; SageMaker Neo wants major.minor for ml_inf1.
FRAMEWORK_VERSION = "1.13"
# One size of each family, printed beside the measurement.
COMPARED = ("ml.inf1.xlarge", "ml.g4dn.xlarge", "ml.c5.xlarge")


def parse_args(description: str, requests: int = 20) -> argparse.Namespace:
    """Parse the options every example takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--endpoint-url",
        default=os.environ.get("NEURONDOCK_URL"),
        help="neurondock's URL, e.g. http://127.0.0.1:8780 (default: $NEURONDOCK_URL, else the "
        "AWS_ENDPOINT_URL_* variables, else AWS itself)",
    )
    parser.add_argument("--region", help="AWS region (default: the environment's, or us-east-1 on neurondock)")
    parser.add_argument("--role", help="execution role ARN (needed on AWS; neurondock fills in a default)")
    parser.add_argument("--requests", type=int, default=requests, help="how many predictions to time")
    parser.add_argument("--keep", action="store_true", help="leave the endpoint running at the end")
    return parser.parse_args()


def make_session(args: argparse.Namespace) -> Session:
    """Return an SDK session for the command line's endpoint and region."""
    return Session(endpoint_url=args.endpoint_url, region_name=args.region)


def compile_for_inf1(
    session: Session,
    args: argparse.Namespace,
    name: str,
    module: Any,
    example_inputs: Any,
    *,
    compiler_options: dict[str, Any] | None = None,
    entry_point: str | None = None,
) -> Model:
    """Trace ``module`` with ``example_inputs``, upload it and compile it for ml_inf1; return the Model."""
    bucket = session.default_bucket()
    package = package_module(module, example_inputs, upload=True, session=session, key_prefix=f"examples/{name}/source")
    print(f"packaged {', '.join(package.members)} -> {package.model_data} (input shape {package.input_shape})")
    model = Model(
        model_data=package.model_data,
        role=args.role,
        name=name_from_base(f"example-{name}"),
        entry_point=entry_point,
        session=session,
    )
    started = time.perf_counter()
    model.compile(
        target_instance_family=TARGET,
        input_shape=package.input_shape or {},
        output_path=f"s3://{bucket}/examples/{name}/compiled",
        framework_version=FRAMEWORK_VERSION,
        compiler_options=compiler_options,
    )
    print(f"compiled for {TARGET} in {time.perf_counter() - started:.1f} s -> {model.model_data}")
    return model


def deploy(model: Model, **predictor_options: Any) -> Predictor:
    """Deploy the compiled model on one ml.inf1.xlarge and return its Predictor."""
    started = time.perf_counter()
    predictor = model.deploy(initial_instance_count=1, instance_type=INSTANCE_TYPE, **predictor_options)
    print(f"endpoint {predictor.endpoint_name} InService on {INSTANCE_TYPE} in {time.perf_counter() - started:.1f} s")
    return predictor


@dataclass(frozen=True)
class Latency:
    """Wall-clock latencies of repeated predictions, in milliseconds."""

    samples: tuple[float, ...]

    @property
    def p50(self) -> float:
        return statistics.median(self.samples)

    @property
    def p90(self) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def time_predictions(predict: Callable[[], Any], requests: int) -> Latency:
    """Call ``predict`` once to warm up, then ``requests`` times, timing each call."""
    predict()
    samples = []
    for _ in range(max(requests, 1)):
        started = time.perf_counter()
        predict()
        samples.append((time.perf_counter() - started) * 1e3)
    return Latency(tuple(samples))


def compile_report(session: Session, model: Model) -> dict[str, Any] | None:
    """Return the report neurondock writes beside the compiled artifact (``<artifact>/manifest.json``).

    SageMaker Neo writes no such file, so on AWS this returns None.
    """
    if not model.model_data or not model.model_data.endswith(".tar.gz"):
        return None
    bucket, _, key = model.model_data.removeprefix("s3://").partition("/")
    try:
        body = session.s3_client.get_object(Bucket=bucket, Key=key.removesuffix(".tar.gz") + "/manifest.json")["Body"]
        report: dict[str, Any] = json.loads(body.read())
    except (BotoCoreError, ClientError, ValueError):  # no readable report here
        return None
    return report


def _row(entries: list[dict[str, Any]], instance_type: str) -> dict[str, Any] | None:
    return next((e for e in entries if e.get("instance_type") == instance_type), None)


def print_comparison(title: str, measured: Latency, report: dict[str, Any] | None, batch_size: int = 1) -> None:
    """Print the measured CPU latencies beside the report's projections, each projection labelled so."""
    print(f"\n== {title}: measured on this machine vs projected (batch {batch_size}) ==")
    print(
        f"measured   endpoint round trip on this CPU (InvokeEndpoint):  p50 {measured.p50:7.2f} ms   "
        f"p90 {measured.p90:7.2f} ms   ({len(measured.samples)} requests)"
    )
    if report is None:
        print("(no neurondock compile report beside the artifact, so no projections to show)")
        return
    projection = report.get("projection") or {}
    cpu = projection.get("measured_cpu") or {}
    print(
        f"measured   model alone on this CPU ({cpu.get('host', 'this host')}, {cpu.get('threads', '?')} thread(s), "
        f"by the compile job):  p50 {float(cpu.get('p50_ms') or 0):7.3f} ms"
    )
    families = {"ml.inf1": "inf1", "ml.g4dn": "g4dn", "ml.c5": "c5"}
    for instance_type in COMPARED:
        family = families[instance_type.rsplit(".", 1)[0]]
        entry = _row(projection.get(family) or [], instance_type)
        if entry is None or not entry.get("fits", True):
            reason = entry.get("reason", "not in the report") if entry else "not in the report"
            print(f"projected  {instance_type:<15} no projection: {reason}")
            continue
        cost_text = _cost_per_million(entry)
        print(
            f"projected  {instance_type:<15} latency {entry['latency_ms']:8.3f} ms   "
            f"throughput {entry['throughput_per_s']:>10.1f}/s   {cost_text} per million inferences   "
            f"({entry.get('label', 'projected')})"
        )
    prices = projection.get("prices") or {}
    print(
        f"           projected costs use {prices.get('basis', 'list prices')}, as of {prices.get('as_of', '?')}; "
        "projected latencies exclude the HTTP round trip"
    )
    _print_compile_summary(report)


def _cost_per_million(entry: dict[str, Any]) -> str:
    # The report's formula ($/h x 1e6 / (3600 x throughput)) without its rounding to 4 decimals, which
    # turns the cost of small models into $0.0000.
    price, throughput = entry.get("usd_per_hour"), entry.get("throughput_per_s")
    if not price or not throughput:
        cost = entry.get("cost_per_million_usd")
        return f"${cost:.4f}" if cost is not None else "n/a"
    cost = float(price) * 1e6 / (3600.0 * float(throughput))
    return f"${cost:.4f}" if cost >= 0.01 else f"${cost:.2g}"


def _print_compile_summary(report: dict[str, Any]) -> None:
    partition = report.get("partition") or {}
    unsupported = (report.get("analyze") or {}).get("unsupported_operators") or []
    drift = ((report.get("numerics") or {}).get("drift") or {}).get("max_abs_error")
    print(
        f"compile    {partition.get('percent_compiled', '?')}% of arithmetic ops on NeuronCores in "
        f"{partition.get('neuron_subgraphs', '?')} subgraph(s); not supported by Neuron (runs on the CPU): "
        f"{', '.join(unsupported) or 'nothing'}; emulated BF16 drift max |error| "
        f"{f'{drift:.3g}' if drift is not None else '?'} (measured here); the endpoint serves "
        f"{(report.get('execution') or {}).get('selected', '?')}"
    )


def clean_up(model: Model, keep: bool) -> None:
    """Delete the model's endpoint, its config and its model (or say how, with ``--keep``)."""
    name = model.endpoint_name
    if name is None:
        return
    if keep:
        print(f"\nendpoint {name} left running (--keep); Predictor({name!r}).delete_endpoint() removes it")
        return
    predictor = Predictor(name, model.session)
    try:
        predictor.delete_model()
        predictor.delete_endpoint()
        waiters.wait_for_endpoint_deleted(
            model.session.sagemaker_client, name, policy=waiters.PollPolicy(progress=False)
        )
        print(f"\ndeleted endpoint {name}, its endpoint config and its model")
    except (AwsError, SdkError) as exc:
        print(f"\ncould not delete endpoint {name}: {exc}")
