"""``neurondock deploy``: a model file to an InService endpoint in one command, compiled for inf1 on request.

Steps: pack a TorchScript file into a SageMaker ``model.tar.gz`` (no torch needed: the file is checked
to be a TorchScript archive by its zip layout), upload it to the account's artifact bucket, optionally
run CreateCompilationJob for ``ml_inf1`` and use its artifact and inference image, then CreateModel,
CreateEndpointConfig and CreateEndpoint, and wait for InService with a live status line.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import click

from neurondock_platform.cli_commands._client import CliError, Connection, TimedOut, boto_error
from neurondock_platform.cli_commands._output import connection_options, emit_json, facts

DEFAULT_IMAGE = "763104351884.dkr.ecr.{region}.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"
ROLE = "arn:aws:iam::{account}:role/neurondock-deploy"
NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
TERMINAL = {"InService", "Failed", "OutOfService", "UpdateRollbackFailed"}
JOB_TERMINAL = {"COMPLETED", "FAILED", "STOPPED"}


def is_torchscript(data: bytes) -> bool:
    """Tell a TorchScript archive (torch.jit.save) from a pickle or torch.save of weights."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        return False
    return any("/code/" in n for n in names) and any(
        n.endswith("constants.pkl") or n.endswith("data.pkl") for n in names
    )


def pack(model_file: Path, code_dir: Path | None) -> bytes:
    """Return a model.tar.gz: an archive as given, or a TorchScript file as ``model.pt`` (+ ``code/``)."""
    name = model_file.name.lower()
    data = model_file.read_bytes()
    if name.endswith((".tar.gz", ".tgz")):
        if code_dir is not None:
            raise click.UsageError("--code applies to a .pt/.pth file; put code/ inside your model.tar.gz instead.")
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise CliError(f"{model_file} is not a gzip-compressed tar archive.") from exc
        return data
    if not name.endswith((".pt", ".pth")):
        raise click.UsageError(f"{model_file}: give a TorchScript .pt/.pth file or a SageMaker model.tar.gz.")
    if not is_torchscript(data):
        raise CliError(
            f"{model_file} is not TorchScript (a torch.save of weights or a module?). Save the model with "
            "torch.jit.save(torch.jit.trace(model, example), path) and deploy that file."
        )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("model.pt")
        info.size = len(data)
        info.mtime = int(time.time())
        tar.addfile(info, io.BytesIO(data))
        if code_dir is not None:
            for path in sorted(p for p in code_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
                tar.add(path, arcname=f"code/{path.relative_to(code_dir).as_posix()}")
    return buf.getvalue()


def parse_shapes(values: tuple[str, ...]) -> dict[str, list[int]]:
    """Parse ``--input-shape input0:1,3,224,224`` (or ``1,3,224,224`` for input0) into DataInputConfig."""
    shapes: dict[str, list[int]] = {}
    for index, value in enumerate(values):
        name, _, dims = value.rpartition(":")
        try:
            shape = [int(d) for d in dims.replace("x", ",").split(",") if d.strip()]
        except ValueError as exc:
            raise click.BadParameter(f"{value!r}: use NAME:D0,D1,… e.g. input0:1,3,224,224") from exc
        if not shape or any(d <= 0 for d in shape):
            raise click.BadParameter(f"{value!r}: dimensions must be positive integers")
        shapes[name or f"input{index}"] = shape
    return shapes


class Progress:
    """One status line that rewrites itself on a terminal and prints changes otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last = ""
        self.started = time.monotonic()

    def update(self, text: str) -> None:
        if not self.enabled:
            return
        line = f"{text} ({time.monotonic() - self.started:.0f}s)"
        if self.tty:
            click.echo(f"\r\033[K{line}", nl=False, err=True)
        elif text != self.last:
            click.echo(line, err=True)
        self.last = text

    def done(self, text: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            click.echo(f"\r\033[K{text}", err=True)
        else:
            click.echo(text, err=True)
        self.started = time.monotonic()


def _upload(conn: Connection, data: bytes, bucket: str, key: str, show: bool) -> None:
    s3 = conn.boto3_client("s3")
    try:
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket)
        if show:
            with click.progressbar(length=len(data), label=f"Uploading s3://{bucket}/{key}", file=sys.stderr) as bar:
                s3.upload_fileobj(io.BytesIO(data), bucket, key, Callback=bar.update)
        else:
            s3.upload_fileobj(io.BytesIO(data), bucket, key)
    except Exception as exc:
        raise boto_error(exc) from exc


def _compile(
    conn: Connection,
    sm: Any,
    name: str,
    input_uri: str,
    bucket: str,
    account: str,
    shapes: dict[str, list[int]],
    options: str | None,
    timeout: float,
    progress: Progress,
) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    job_name = f"{name[:44]}-{time.strftime('%Y%m%d%H%M%S')}"
    request: dict[str, Any] = {
        "CompilationJobName": job_name,
        "RoleArn": ROLE.format(account=account),
        "InputConfig": {"S3Uri": input_uri, "DataInputConfig": json.dumps(shapes), "Framework": "PYTORCH"},
        "OutputConfig": {"S3OutputLocation": f"s3://{bucket}/compiled/{name}/", "TargetDevice": "ml_inf1"},
        "StoppingCondition": {"MaxRuntimeInSeconds": 900},
    }
    if options:
        request["OutputConfig"]["CompilerOptions"] = options
    try:
        sm.create_compilation_job(**request)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "UnknownOperationException":
            click.echo("neurondock: this neurondock has no compile API; deploying uncompiled.", err=True)
            return None
        raise boto_error(exc) from exc
    deadline = time.monotonic() + timeout
    while True:
        job = sm.describe_compilation_job(CompilationJobName=job_name)
        status = job["CompilationJobStatus"]
        progress.update(f"Compiling for ml_inf1 (emulated): {job_name} {status}")
        if status in JOB_TERMINAL:
            break
        if time.monotonic() > deadline:
            raise TimedOut(f"Compilation job {job_name} is still {status} after {timeout:.0f} s.")
        time.sleep(1.0)
    if status != "COMPLETED":
        raise CliError(f"Compilation job {job_name} {status}: {job.get('FailureReason') or 'no reason given'}")
    progress.done(f"Compiled {job_name} for ml_inf1 (emulated)")
    return dict(job)


@click.command()
@click.argument("model_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", "-n", required=True, help="Endpoint name (also the model's and config's base name).")
@click.option(
    "--instance-type", default="ml.c5.large", show_default=True, help="e.g. ml.inf1.xlarge (emulated), ml.c5.large."
)
@click.option("--instance-count", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option(
    "--image", default=None, help="Inference image (default: AWS's PyTorch CPU image; the compile job's when compiled)."
)
@click.option(
    "--code",
    "code_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A directory with inference.py (model_fn/input_fn/predict_fn/output_fn), packed as code/.",
)
@click.option(
    "--compile/--no-compile",
    "compile_",
    default=None,
    help="Compile for ml_inf1 first (default: when --instance-type is ml.inf1.* and --input-shape is given).",
)
@click.option(
    "--input-shape", "input_shapes", multiple=True, help="Compile input shape, NAME:D0,D1,… (repeat per input)."
)
@click.option("--compiler-options", default=None, help='CompilerOptions JSON, e.g. \'{"--fast-math": "none"}\'.')
@click.option("--bucket", default=None, help="Artifact bucket (default: nd-artifacts-<account id>).")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until the endpoint is InService.")
@click.option("--timeout", type=float, default=900.0, show_default=True, help="Seconds to wait for compile and deploy.")
@connection_options
def deploy(
    conn: Connection,
    output: str,
    model_file: Path,
    name: str,
    instance_type: str,
    instance_count: int,
    image: str | None,
    code_dir: Path | None,
    compile_: bool | None,
    input_shapes: tuple[str, ...],
    compiler_options: str | None,
    bucket: str | None,
    wait: bool,
    timeout: float,
) -> None:
    """Deploy MODEL_FILE (TorchScript .pt/.pth or model.tar.gz) as endpoint NAME."""
    if not NAME_RE.match(name):
        raise click.BadParameter("letters, digits and hyphens, at most 63 characters", param_hint="--name")
    shapes = parse_shapes(input_shapes)
    if compile_ is None:
        compile_ = instance_type.startswith("ml.inf1.") and bool(shapes)
    if compile_ and not shapes:
        raise click.UsageError("--compile needs --input-shape (the shapes to trace with), e.g. input0:1,3,224,224.")
    progress = Progress(enabled=True)
    data = pack(model_file, code_dir)
    account = conn.admin().get("/whoami")["account_id"]
    bucket = bucket or f"nd-artifacts-{account}"
    key = f"deploy/{name}/model.tar.gz"
    _upload(conn, data, bucket, key, show=sys.stderr.isatty())
    model_url = f"s3://{bucket}/{key}"
    progress.done(f"Uploaded {model_url} ({len(data)} bytes)")
    sm = conn.boto3_client("sagemaker")
    job = None
    if compile_:
        job = _compile(conn, sm, name, model_url, bucket, account, shapes, compiler_options, timeout, progress)
    image_uri = image or (job["InferenceImage"] if job else DEFAULT_IMAGE.format(region=conn.region))
    data_url = job["ModelArtifacts"]["S3ModelArtifacts"] if job else model_url
    config_name = f"{name[:48]}-{time.strftime('%Y%m%d%H%M%S')}"
    try:
        sm.create_model(
            ModelName=name,
            PrimaryContainer={"Image": image_uri, "ModelDataUrl": data_url},
            ExecutionRoleArn=ROLE.format(account=account),
        )
        sm.create_endpoint_config(
            EndpointConfigName=config_name,
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": name,
                    "InstanceType": instance_type,
                    "InitialInstanceCount": instance_count,
                    "InitialVariantWeight": 1.0,
                }
            ],
        )
        sm.create_endpoint(EndpointName=name, EndpointConfigName=config_name)
    except Exception as exc:
        raise boto_error(exc) from exc
    status, reason = "Creating", None
    if wait:
        deadline = time.monotonic() + timeout
        while True:
            try:
                desc = sm.describe_endpoint(EndpointName=name)
            except Exception as exc:
                raise boto_error(exc) from exc
            status, reason = desc["EndpointStatus"], desc.get("FailureReason")
            variant = (desc.get("ProductionVariants") or [{}])[0]
            progress.update(
                f"Endpoint {name}: {status}, {variant.get('CurrentInstanceCount', 0)}/{instance_count} instance(s)"
            )
            if status in TERMINAL:
                break
            if time.monotonic() > deadline:
                raise TimedOut(f"Endpoint {name} is still {status} after {timeout:.0f} s.")
            time.sleep(0.5)
        progress.done(f"Endpoint {name}: {status}")
    result = {
        "endpoint_name": name,
        "status": status,
        "failure_reason": reason,
        "model_name": name,
        "endpoint_config_name": config_name,
        "instance_type": instance_type,
        "instance_count": instance_count,
        "model_data_url": data_url,
        "image": image_uri,
        "compilation_job": job["CompilationJobName"] if job else None,
        "invoke": f"neurondock invoke {name} --body '<json>'",
    }
    if output == "json":
        emit_json(result)
    else:
        click.echo(facts([(k.replace("_", " ").capitalize(), v) for k, v in result.items()]))
    if wait and status != "InService":
        raise CliError(f"Endpoint {name} is {status}: {reason or 'no reason given'}")


COMMANDS = [deploy]
