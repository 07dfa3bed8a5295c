"""``neurondock invoke`` (InvokeEndpoint through boto3) and ``neurondock logs`` (replica logs, --follow)."""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import click

from neurondock_platform.cli_commands._client import CliError, Connection, NotFound, boto_error
from neurondock_platform.cli_commands._output import connection_options, emit_json


@click.command()
@click.argument("endpoint_name")
@click.option("--body", "-b", default=None, help="Request body text (default: --file, else stdin).")
@click.option("--file", "-f", "body_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@click.option("--content-type", "-t", default="application/json", show_default=True)
@click.option("--accept", "-a", default=None, help="Accept header (default: the content type's usual answer).")
@click.option("--target-variant", default=None, help="Send to this production variant instead of by weight.")
@click.option(
    "--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the body here."
)
@connection_options
def invoke(
    conn: Connection,
    output: str,
    endpoint_name: str,
    body: str | None,
    body_file: Path | None,
    content_type: str,
    accept: str | None,
    target_variant: str | None,
    out_file: Path | None,
) -> None:
    """Invoke ENDPOINT_NAME once and print what it answered (exit 1 on a model error)."""
    if body is not None and body_file is not None:
        raise click.UsageError("Give --body or --file, not both.")
    if body is not None:
        payload = body.encode()
    elif body_file is not None:
        payload = body_file.read_bytes()
    else:
        payload = b"" if sys.stdin.isatty() else sys.stdin.buffer.read()
        if not payload:
            raise click.UsageError("Give the request body with --body, --file or on stdin (use --body '' for none).")
    runtime = conn.boto3_client("sagemaker-runtime")
    args = {"EndpointName": endpoint_name, "Body": payload, "ContentType": content_type}
    if accept:
        args["Accept"] = accept
    if target_variant:
        args["TargetVariant"] = target_variant
    started = time.perf_counter()
    try:
        resp = runtime.invoke_endpoint(**args)
    except Exception as exc:
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            if error.get("Code") == "ValidationError" and "not found" in error.get("Message", ""):
                raise NotFound(error.get("Message", "")) from exc
            if error.get("Code") == "ModelError":
                original = str(exc.response.get("OriginalMessage") or error.get("Message", ""))
                lines = [line for line in original.splitlines() if line.strip()]
                # The model's traceback is in the replica log; show its last line here.
                raise CliError(
                    f"ModelError ({exc.response.get('OriginalStatusCode', 500)}): {lines[-1] if lines else ''} "
                    f"— full traceback: neurondock logs {endpoint_name}"
                ) from exc
        raise boto_error(exc) from exc
    latency_ms = round((time.perf_counter() - started) * 1e3, 2)
    answer = resp["Body"].read()
    if out_file is not None:
        out_file.write_bytes(answer)
    if output == "json":
        try:
            text: str | None = answer.decode()
        except UnicodeDecodeError:
            text = None
        emit_json(
            {
                "endpoint_name": endpoint_name,
                "invoked_variant": resp.get("InvokedProductionVariant"),
                "content_type": resp.get("ContentType"),
                "latency_ms": latency_ms,
                "body": text,
                "body_base64": None if text is not None else base64.b64encode(answer).decode(),
            }
        )
        return
    if out_file is None:
        sys.stdout.buffer.write(answer)
        if not answer.endswith(b"\n"):
            sys.stdout.buffer.write(b"\n")
        sys.stdout.flush()
    click.echo(
        f"variant {resp.get('InvokedProductionVariant')} · {resp.get('ContentType')} · {len(answer)} bytes · "
        f"{latency_ms} ms",
        err=True,
    )


@click.command()
@click.argument("endpoint_name")
@click.option("--follow", "-F", is_flag=True, help="Keep printing new lines until Ctrl-C or the endpoint is gone.")
@click.option(
    "--lines", "-n", type=click.IntRange(0, 5000), default=100, show_default=True, help="Last lines per replica."
)
@click.option("--replica", "replica_id", type=int, default=None, help="Only this replica.")
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds between polls with --follow.")
@connection_options
def logs(
    conn: Connection, output: str, endpoint_name: str, follow: bool, lines: int, replica_id: int | None, interval: float
) -> None:
    """Print the replica logs of ENDPOINT_NAME (its CloudWatch, here)."""
    admin = conn.admin()
    query = {"lines": lines, "replica_id": replica_id}
    page = admin.get(f"/endpoints/{endpoint_name}/logs", **query)
    _print(page, output)
    if not follow:
        return
    cursor = page["cursor"]
    try:
        while True:
            time.sleep(interval)
            try:
                page = admin.get(f"/endpoints/{endpoint_name}/logs", cursor=cursor, replica_id=replica_id)
            except NotFound:
                click.echo(f"neurondock: endpoint {endpoint_name} is gone.", err=True)
                return
            _print(page, output)
            cursor = page["cursor"]
    except KeyboardInterrupt:
        return


def _print(page: dict[str, object], output: str) -> None:
    replicas = page.get("replicas") or []
    assert isinstance(replicas, list)
    for chunk in replicas:
        if output == "json":
            for line in chunk["lines"]:
                emit_json_line({"replica_id": chunk["replica_id"], "variant": chunk["variant_name"], "line": line})
            continue
        prefix = f"[{chunk['variant_name']}/{chunk['replica_id']}]"
        for line in chunk["lines"]:
            click.echo(f"{prefix} {line}")


def emit_json_line(data: dict[str, object]) -> None:
    click.echo(json.dumps(data))


COMMANDS = [invoke, logs]
