"""``neurondock neuron-ls``, ``neuron-top`` and ``neuron-monitor``: the Neuron tools' views of the emulated chips.

The layouts follow the real tools (aws-neuron-sdk neuron-ls / neuron-top / neuron-monitor user guides):
neuron-ls's boxed device table with PID, command and runtime version per process, neuron-top's
NeuronCore utilization, vCPU and memory info and loaded-models sections, and neuron-monitor's stream of
one JSON report per period. Every screen and report says it is emulated.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import click

from neurondock_platform.cli_commands._client import Connection, NotFound
from neurondock_platform.cli_commands._output import connection_options, emit_json, size

LS_COLUMNS = [
    ("NEURON", "DEVICE", 6),
    ("NEURON", "CORES", 6),
    ("NEURON", "MEMORY", 6),
    ("CONNECTED", "DEVICES", 9),
    ("PCI", "BDF", 12),
    ("PID", "", 5),
    ("COMMAND", "", 40),
    ("RUNTIME", "VERSION", 7),
]
EMULATED_NOTE = "(emulated by neurondock: no real Inferentia devices; chips and NeuronCores are simulated)"


def _hosts(conn: Connection, host: str | None) -> list[str]:
    admin = conn.admin()
    if host:
        return [host]
    ids = [h["id"] for h in admin.pages("/hosts")]
    if not ids:
        raise NotFound("No host agent has registered yet (neurondock up starts one).")
    return ids


def _rule() -> str:
    return "+" + "+".join("-" * (w + 2) for _, _, w in LS_COLUMNS) + "+"


def _row(values: list[str], center: bool = False) -> str:
    cells = []
    for (_, _, width), value in zip(LS_COLUMNS, values, strict=True):
        text = value if len(value) <= width else value[: width - 3] + "..."
        cells.append(f" {text.center(width) if center else text.ljust(width)} ")
    return "|" + "|".join(cells) + "|"


def render_neuron_ls(data: dict[str, Any]) -> str:
    """Render neuron-ls's table for one host."""
    lines = [
        f"instance-type: {data['instance_type']}",
        f"instance-id: {data['host_id']}",
        EMULATED_NOTE,
        _rule(),
        _row([c[0] for c in LS_COLUMNS], center=True),
        _row([c[1] for c in LS_COLUMNS], center=True),
        _rule(),
    ]
    for device in data["neuron_devices"]:
        memory = f"{device['memory_size'] // 1024**3} GB"
        connected = ", ".join(str(c) for c in device["connected_to"])
        processes = device["neuron_processes"] or [{"pid": None, "command": "NA", "neuron_runtime_version": "NA"}]
        for index, process in enumerate(processes):
            first = index == 0
            lines.append(
                _row(
                    [
                        str(device["neuron_device"]) if first else "",
                        str(device["nc_count"]) if first else "",
                        memory if first else "",
                        connected if first else "",
                        device["bdf"] if first else "",
                        "NA" if process["pid"] is None else str(process["pid"]),
                        str(process["command"]),
                        str(process["neuron_runtime_version"]),
                    ]
                )
            )
    lines.append(_rule())
    return "\n".join(lines)


@click.command("neuron-ls")
@click.option("--host", default=None, help="One host id (default: every host).")
@click.option("--json-output", "-j", "as_json", is_flag=True, help="neuron-ls -j style JSON (same as --output json).")
@connection_options
def neuron_ls(conn: Connection, output: str, host: str | None, as_json: bool) -> None:
    """List each host's emulated Inferentia devices, their cores, memory and processes."""
    admin = conn.admin()
    reports = [admin.get(f"/hosts/{h}/neuron-ls") for h in _hosts(conn, host)]
    if as_json or output == "json":
        emit_json(reports if host is None else reports[0])
        return
    click.echo("\n\n".join(render_neuron_ls(r) for r in reports))


def _bar(title: str, width: int = 100) -> str:
    return f"─ {title} " + "─" * max(3, width - len(title) - 3)


def render_neuron_top(host: dict[str, Any], *, interval: float | None = None) -> str:
    """Render neuron-top's sections for one host (detail JSON of /api/v1/hosts/{id})."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    refresh = f" · refresh {interval:g}s · Ctrl-C quits" if interval else ""
    state = "live" if host["live"] else f"LOST (no heartbeat for {host['heartbeat_age_seconds']:.0f}s)"
    lines = [f"neuron-top (emulated) · host {host['id']} ({state}) · {now}{refresh}", EMULATED_NOTE, ""]
    replicas = {r["id"]: r for r in host["replicas"]}
    lines.append(_bar("NeuronCore Utilization"))
    if not host["chips"]:
        lines.append("  no Inferentia chips on this host")
    for chip in host["chips"]:
        cells = []
        for core in chip["neuron_cores"]:
            util = "  -  " if core["utilization_percent"] is None else f"{core['utilization_percent']:5.1f}%"
            owner = core["owner"] or "idle"
            cells.append(f"NC{core['index']:<2} {util} {owner[:18]:<18}")
        lines.append(f"  nd{chip['index']:<2} " + " │ ".join(cells))
    lines += ["", _bar("VCPU and Memory Info")]
    rss = [r.get("host_memory_bytes") for r in host["replicas"] if r.get("host_memory_bytes") is not None]
    cpu = [r.get("cpu_seconds") for r in host["replicas"] if r.get("cpu_seconds") is not None]
    device_used = sum(c["memory_used_bytes"] or 0 for c in host["chips"])
    unknown_device = any(c["memory_used_bytes"] is None for c in host["chips"])
    estimated = any("estimate" in (r.get("device_memory_source") or "") for r in host["replicas"])
    lines += [
        f"  Total system vCPUs      {host['vcpus']}",
        f"  Runtime vCPU usage      {sum(cpu):.1f} s CPU time (replica processes on this host)"
        if cpu
        else "  Runtime vCPU usage      - (replicas on a remote host are not read)",
        f"  Runtime Memory Host     {size(sum(rss)) if rss else '-'} / {size(host['memory_mb'] * 1024**2)}",
        f"  Runtime Memory Device   {size(device_used)}{' + unknown' if unknown_device else ''} / "
        f"{size(host['device_memory_bytes'])}{' (compile-report estimates)' if estimated else ''}",
        f"  NeuronCores in use      {host['neuron_cores_in_use']} of {host['neuron_core_count']} "
        f"({host['chips_in_use']} of {host['chip_count']} chips)",
        "",
        _bar("Loaded Models"),
        f"  {'Model ID':<44} {'Host Memory':>12} {'Device Memory':>14}",
    ]
    groups: dict[str, list[dict[str, Any]]] = {}
    for replica in replicas.values():
        if "owner" in replica:  # another account's replica: capacity only
            continue
        if replica["state"] in ("Stopped",) or replica["desired_state"] != "running":
            continue
        groups.setdefault(replica["model_name"] or "?", []).append(replica)
    if not groups:
        lines.append("  (none of yours)")
    for model, items in sorted(groups.items()):
        host_mem = [r["host_memory_bytes"] for r in items]
        dev_mem = [r["device_memory_bytes"] for r in items]
        total_host = size(sum(host_mem)) if all(v is not None for v in host_mem) else "-"
        total_dev = size(sum(dev_mem)) if all(v is not None for v in dev_mem) else "-"
        lines.append(f"  [-] {model[:40]:<40} {total_host:>12} {total_dev:>14}")
        for r in items:
            cores = r["neuron_cores"]
            span = f"NC{cores[0]}-{cores[-1]}" if cores else "CPU"
            label = f"{r['endpoint_name']}/{r['variant_name']} #{r['id']} {span} {r['state']}"
            lines.append(
                f"      └ {label[:36]:<36} {size(r['host_memory_bytes']):>12} {size(r['device_memory_bytes']):>14}"
            )
    return "\n".join(lines)


@click.command("neuron-top")
@click.option("--host", default=None, help="One host id (default: every host).")
@click.option("--once", is_flag=True, help="Print one screen and exit (for scripts and logs).")
@click.option(
    "--interval", type=click.FloatRange(0.2, 3600), default=2.0, show_default=True, help="Seconds between refreshes."
)
@click.option("--iterations", type=click.IntRange(1), default=None, help="Stop after this many screens.")
@connection_options
def neuron_top(
    conn: Connection, output: str, host: str | None, once: bool, interval: float, iterations: int | None
) -> None:
    """Watch NeuronCore utilization, memory and loaded models per host (emulated)."""
    admin = conn.admin()
    count = 0
    try:
        while True:
            screens = [admin.get(f"/hosts/{h}") for h in _hosts(conn, host)]
            if output == "json":
                emit_json(screens)
            else:
                if not once and count:
                    click.clear()
                click.echo("\n\n".join(render_neuron_top(s, interval=None if once else interval) for s in screens))
            count += 1
            if once or (iterations is not None and count >= iterations):
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return


@click.command("neuron-monitor")
@click.option("--host", default=None, help="One host id (default: every host).")
@click.option("--period", type=click.IntRange(1, 3600), default=5, show_default=True, help="Seconds between reports.")
@click.option("--iterations", type=click.IntRange(1), default=None, help="Stop after this many reports per host.")
@connection_options
def neuron_monitor(conn: Connection, output: str, host: str | None, period: int, iterations: int | None) -> None:
    """Print one neuron-monitor JSON report per host every period, one per line (emulated)."""
    admin = conn.admin()
    count = 0
    try:
        while True:
            for host_id in _hosts(conn, host):
                # Like the real tool: one compact JSON document per line, so `| jq` and log shippers work.
                report = admin.get(f"/hosts/{host_id}/neuron-monitor", period=period)
                click.echo(json.dumps(report, separators=(",", ":")))
            count += 1
            if iterations is not None and count >= iterations:
                return
            time.sleep(period)
    except KeyboardInterrupt:
        return


COMMANDS = [neuron_ls, neuron_top, neuron_monitor]
