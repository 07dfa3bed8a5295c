"""``neurondock models|configs|endpoints|jobs list|describe``: the account's resources as tables or JSON."""

from __future__ import annotations

from typing import Any

import click

from neurondock_platform.cli_commands._client import Connection
from neurondock_platform.cli_commands._output import connection_options, emit_json, facts, size, table, usd

LIST_LIMIT = click.option(
    "--limit", type=click.IntRange(1, 10_000), default=100, show_default=True, help="At most this many."
)
NAME_CONTAINS = click.option("--name-contains", default=None, help="Only names containing this (case-insensitive).")


def _list(conn: Connection, path: str, limit: int, **query: Any) -> list[dict[str, Any]]:
    return list(conn.admin().pages(path, limit=limit, **query))


@click.group()
def models() -> None:
    """SageMaker models of your account."""


@models.command("list")
@NAME_CONTAINS
@LIST_LIMIT
@connection_options
def list_models(conn: Connection, output: str, name_contains: str | None, limit: int) -> None:
    """List models, newest first."""
    items = _list(conn, "/models", limit, name_contains=name_contains)
    if output == "json":
        emit_json(items)
        return
    click.echo(table(["name", "image", "created"], [[m["name"], m["image"], m["created_at"]] for m in items]))


@models.command("describe")
@click.argument("name")
@connection_options
def describe_model(conn: Connection, output: str, name: str) -> None:
    """Show one model."""
    model = conn.admin().get(f"/models/{name}")
    if output == "json":
        emit_json(model)
        return
    click.echo(
        facts(
            [
                ("Name", model["name"]),
                ("ARN", model["arn"]),
                ("Image", model["image"]),
                ("Model data", model["model_data_url"]),
                ("Environment", [f"{k}={v}" for k, v in model["environment"].items()]),
                ("Created", model["created_at"]),
            ]
        )
    )


@click.group()
def configs() -> None:
    """Endpoint configs of your account."""


@configs.command("list")
@NAME_CONTAINS
@LIST_LIMIT
@connection_options
def list_configs(conn: Connection, output: str, name_contains: str | None, limit: int) -> None:
    """List endpoint configs, newest first."""
    items = _list(conn, "/endpoint-configs", limit, name_contains=name_contains)
    if output == "json":
        emit_json(items)
        return
    click.echo(
        table(["name", "variants", "created"], [[c["name"], c["variant_count"], c["created_at"]] for c in items])
    )


@configs.command("describe")
@click.argument("name")
@connection_options
def describe_config(conn: Connection, output: str, name: str) -> None:
    """Show one endpoint config and its production variants."""
    config = conn.admin().get(f"/endpoint-configs/{name}")
    if output == "json":
        emit_json(config)
        return
    click.echo(facts([("Name", config["name"]), ("ARN", config["arn"]), ("Created", config["created_at"])]))
    click.echo()
    rows = [
        [
            v["variant_name"],
            v["model_name"],
            v["instance_type"],
            v["initial_instance_count"],
            v["initial_variant_weight"],
        ]
        for v in config["production_variants"]
    ]
    click.echo(table(["variant", "model", "instance type", "count", "weight"], rows))


@click.group()
def endpoints() -> None:
    """Endpoints of your account."""


@endpoints.command("list")
@NAME_CONTAINS
@click.option("--status", default=None, help="Only endpoints in this status (e.g. InService).")
@LIST_LIMIT
@connection_options
def list_endpoints(conn: Connection, output: str, name_contains: str | None, status: str | None, limit: int) -> None:
    """List endpoints, newest first."""
    items = _list(conn, "/endpoints", limit, name_contains=name_contains, status=status)
    if output == "json":
        emit_json(items)
        return
    rows = [[e["name"], e["status"], e["instance_types"], e["instance_count"], e["last_modified_at"]] for e in items]
    click.echo(table(["name", "status", "instance types", "instances", "last modified"], rows))


@endpoints.command("describe")
@click.argument("name")
@connection_options
def describe_endpoint(conn: Connection, output: str, name: str) -> None:
    """Show one endpoint: variants, replicas with their hosts and (emulated) NeuronCores, and its cost."""
    admin = conn.admin()
    endpoint = admin.get(f"/endpoints/{name}")
    cost = admin.get(f"/endpoints/{name}/costs")
    if output == "json":
        emit_json({**endpoint, "cost": cost})
        return
    click.echo(
        facts(
            [
                ("Name", endpoint["name"]),
                ("Status", endpoint["status"]),
                ("Failure reason", endpoint["failure_reason"]),
                ("Config", endpoint["endpoint_config_name"]),
                ("Invoke URL", endpoint["invoke_url"]),
                ("Created", endpoint["created_at"]),
                ("Last modified", endpoint["last_modified_at"]),
                ("Cost", f"{usd(cost['usd_per_hour'])}/hour ({cost['price_basis']})"),
            ]
        )
    )
    click.echo("\nVariants")
    rows = [
        [
            v["name"],
            v["model_name"],
            v["instance_type"],
            f"{v['current_instance_count']}/{v['desired_instance_count']}",
            f"{v['current_weight']:g}/{v['desired_weight']:g}",
            v["status"],
        ]
        for v in endpoint["variants"]
    ]
    click.echo(
        table(["variant", "model", "instance type", "instances (cur/want)", "weight (cur/want)", "status"], rows)
    )
    replicas = [(v["name"], r) for v in endpoint["variants"] for r in v["replicas"]]
    click.echo("\nReplicas")
    if not replicas:
        click.echo("  none placed yet")
        return
    rows = [
        [
            r["id"],
            variant,
            r["host_id"],
            r["state"],
            r["chips"],
            _core_range(r["neuron_cores"], r.get("neuron_cores_source")),
            r["pid"],
            size(r["host_memory_bytes"]),
        ]
        for variant, r in replicas
    ]
    click.echo(table(["replica", "variant", "host", "state", "chips", "neuroncores", "pid", "host mem"], rows))


@endpoints.command("events")
@click.argument("name")
@LIST_LIMIT
@connection_options
def endpoint_events(conn: Connection, output: str, name: str, limit: int) -> None:
    """Show an endpoint's status history, newest first (kept after delete until the name is reused)."""
    items = _list(conn, f"/endpoints/{name}/events", limit)
    if output == "json":
        emit_json(items)
        return
    rows = [[e["time"], e["previous_status"] or "-", e["status"], e["reason"] or ""] for e in items]
    click.echo(table(["time", "from", "to", "reason"], rows))


@endpoints.command("errors")
@click.argument("name")
@LIST_LIMIT
@connection_options
def endpoint_errors(conn: Connection, output: str, name: str, limit: int) -> None:
    """Show an endpoint's recent failed invocations, newest first, with the request ids callers got."""
    items = _list(conn, f"/endpoints/{name}/errors", limit)
    if output == "json":
        emit_json(items)
        return
    rows = [
        [e["time"], e["http_status"], e["error_code"], e["variant_name"] or "-", e["replica_id"] or "-",
         e["request_id"], (e["message"] or "").splitlines()[0][:100] if e["message"] else ""]
        for e in items
    ]  # fmt: skip
    click.echo(table(["time", "status", "code", "variant", "replica", "request id", "message"], rows))


def _core_range(cores: list[int], source: str | None) -> str:
    if not cores:
        return "-"
    span = f"{cores[0]}-{cores[-1]}" if len(cores) > 1 else str(cores[0])
    return f"{span} ({source})" if source else span


@click.group()
def jobs() -> None:
    """Compilation jobs (emulated Neuron compiles) of your account."""


@jobs.command("list")
@NAME_CONTAINS
@click.option("--status", default=None, help="Only jobs in this status (e.g. COMPLETED).")
@LIST_LIMIT
@connection_options
def list_jobs(conn: Connection, output: str, name_contains: str | None, status: str | None, limit: int) -> None:
    """List compilation jobs, newest first."""
    items = _list(conn, "/compilation-jobs", limit, name_contains=name_contains, status=status)
    if output == "json":
        emit_json(items)
        return
    rows = [[j["name"], j["status"], j["target_device"], j["percent_supported"], j["created_at"]] for j in items]
    click.echo(table(["name", "status", "target", "% ops on neuron", "created"], rows))


@jobs.command("describe")
@click.argument("name")
@connection_options
def describe_job(conn: Connection, output: str, name: str) -> None:
    """Show a compilation job: the compile report and projections (labelled projected)."""
    admin = conn.admin()
    job = admin.get(f"/compilation-jobs/{name}")
    projections = admin.get(f"/compilation-jobs/{name}/projections")
    if output == "json":
        emit_json({**job, "projections": projections["projections"]})
        return
    click.echo(
        facts(
            [
                ("Name", job["name"]),
                ("Status", job["status"]),
                ("Failure reason", job["failure_reason"]),
                ("Target", job["target_device"]),
                ("Input", job["input_s3_uri"]),
                ("Artifact", job["model_artifacts"]),
                ("Inference image", job["inference_image"]),
            ]
        )
    )
    report = job.get("report")
    if report:
        click.echo("\nCompile report (emulated)")
        click.echo(
            facts(
                [
                    ("Ops supported on Neuron", f"{report['percent_supported']}%"),
                    ("Arithmetic ops compiled", f"{report['percent_compiled']}%"),
                    ("Neuron subgraphs / CPU segments", f"{report['neuron_subgraphs']} / {report['cpu_segments']}"),
                    ("Numerics drift (max abs)", report["numerics"]["max_abs_error"]),
                    (
                        "Device memory per replica (estimate)",
                        size(report["resources"]["device_memory_per_replica_bytes"]),
                    ),
                    (
                        "CPU execution (measured)",
                        f"{report['execution']['selected']} p50 {report['execution']['selected_p50_ms']} ms",
                    ),
                ]
            )
        )
        if report["cpu_fallbacks"]:
            click.echo("\nCPU fallbacks")
            click.echo(
                table(
                    ["operator", "count", "why"],
                    [[f["operator"], f["count"], f["reason"]] for f in report["cpu_fallbacks"]],
                )
            )
    table_ = projections.get("projections")
    if table_:
        click.echo(f"\nProjections ({table_['label']})")
        rows = [
            [
                r["instance_type"],
                r["label"],
                r["latency_ms"],
                r["throughput_per_s"],
                usd(r["usd_per_hour"]),
                usd(r["cost_per_million_usd"], 4),
            ]
            for r in table_["rows"]
        ]
        click.echo(table(["instance type", "kind", "latency ms", "throughput/s", "$/hour", "$/million"], rows))


COMMANDS = [models, configs, endpoints, jobs]
