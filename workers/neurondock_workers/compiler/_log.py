"""The compile log, written in torch-neuron's and neuron-cc's line formats (docs/compiler.md, "The compile log")."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from . import _oplist


class CompileLog:
    """Collect log lines; `INFO:Neuron:` for torch-neuron, timestamped lines for neuron-cc."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        """Append an INFO:Neuron line."""
        self.lines.append(f"INFO:Neuron:{message}")

    def warning(self, message: str) -> None:
        """Append a WARNING:Neuron line."""
        self.lines.append(f"WARNING:Neuron:{message}")

    def error(self, message: str) -> None:
        """Append an ERROR:Neuron line."""
        self.lines.append(f"ERROR:Neuron:{message}")

    def raw(self, line: str) -> None:
        """Append a line as is (progress dots)."""
        self.lines.append(line)

    def text(self) -> str:
        """Return the whole log."""
        return "\n".join(self.lines) + "\n"


def neuron_cc_line(level: str, message: str, component: str = "neuron-cc") -> str:
    """Format a neuron-cc line: `MM/DD/YYYY HH:MM:SS AM INFO <pid> [neuron-cc]: message`."""
    stamp = time.strftime("%m/%d/%Y %I:%M:%S %p")
    return f"{stamp} {level} {os.getpid()} [{component}]: {message}"


def log_partition_start(
    log: CompileLog, unsupported_counts: Mapping[str, int], arithmetic_total: int, fused: int
) -> None:
    """Write torch-neuron's pre-compilation summary."""
    if unsupported_counts:
        kinds = "".join(f"{k}, " for k in sorted(unsupported_counts))
        log.info(
            f"There are {sum(unsupported_counts.values())} ops of {len(unsupported_counts)} different types "
            f"in the TorchScript that are not compiled by neuron-cc: {kinds}"
            f"(For more information see {_oplist.REFERENCE_URL})"
        )
    else:
        log.info(
            "All operators are compiled by neuron-cc (this does not guarantee that neuron-cc will successfully compile)"
        )
    log.info(
        f"Number of arithmetic operators (pre-compilation) before = {arithmetic_total}, fused = {fused}, "
        f"percent fused = {_pct(fused, arithmetic_total)}%"
    )


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.2f}" if whole else "0.00"


def compile_command(workdir: str, index: int, io_config: Mapping[str, Any], args: Sequence[str]) -> str:
    """Return the (emulated) neuron-cc command line for one subgraph."""
    base = f"{workdir}/{index}"
    return (
        f"neurondock-neuron-cc (emulated) compile {base}/graph_def.json --framework TORCHSCRIPT "
        f"--pipeline compile SaveTemps --output {base}/graph_def.neff.json "
        f"--io-config {json.dumps(io_config, separators=(', ', ': '))} "
        f"{' '.join(args)} --verbose 35"
    )


def log_subgraph(log: CompileLog, name: str, workdir: str, index: int, command: str) -> None:
    """Write the per-subgraph compile lines ending in `Compiler status PASS`."""
    log.info(f"Compiling function {name} with neuron-cc; log file is at {workdir}/{index}/graph_def.neuron-cc.log")
    log.info(f"Compiling with command line: '{command}'")
    log.raw(".....")
    log.raw(neuron_cc_line("INFO", "Compiler status PASS", component="root"))


def log_partition_end(
    log: CompileLog,
    plan_summary: Mapping[str, Any],
    compiled: Mapping[str, int],
    not_compiled: Mapping[str, tuple[int, bool]],
    warnings: Sequence[str],
) -> None:
    """Write torch-neuron's post-compilation summary and operator tables."""
    total, fused, subgraphs = (
        plan_summary["arithmetic_ops_before"],
        plan_summary["arithmetic_ops_compiled"],
        plan_summary["neuron_subgraphs"],
    )
    log.info(
        f"Number of arithmetic operators (post-compilation) before = {total}, compiled = {fused}, "
        f"percent compiled = {_pct(fused, total)}%"
    )
    log.info(f"The neuron partitioner created {subgraphs} sub-graphs")
    log.info(
        f"Neuron successfully compiled {subgraphs} sub-graphs, Total fused subgraphs = {subgraphs}, "
        "Percent of model sub-graphs successfully compiled = 100.0%"
    )
    log.info("Compiled these operators (and operator counts) to Neuron:")
    for kind, count in sorted(compiled.items()):
        log.info(f" => {kind}: {count}")
    if not_compiled:
        log.info("Not compiled operators (and operator counts) to Neuron:")
        for kind, (count, supported) in sorted(not_compiled.items()):
            log.info(f" => {kind}: {count} [{'supported' if supported else 'not supported'}]")
    for warning in warnings:
        log.warning(warning)
        if "> 50%" in warning:
            log.warning(
                "Please review the torch.neuron.analyze_model output and lodge an issue on "
                "https://github.com/aws/aws-neuron-sdk/issues if you need an operator supported"
            )


def subgraph_log(name: str, profile: Mapping[str, Any], ops: Mapping[str, int], signature: str) -> str:
    """Return a neuron-cc style log for one subgraph (written as graph_def.neuron-cc.log)."""
    lines = [
        neuron_cc_line("INFO", f"[pipeline.compile.0]: Starting job job.Frontend.0 for {name} (emulated)"),
        neuron_cc_line("INFO", f"IR signature: {signature} for graph_def.json"),
        neuron_cc_line("INFO", f"[Statistics]: Number of operators {sum(ops.values())}"),
        neuron_cc_line("INFO", f"[Statistics]: TensorEngine FLOPs {profile.get('total_flops', 0):.0f}"),
        neuron_cc_line(
            "INFO",
            f"[Statistics]: Weights {profile.get('weight_count', 0):.0f} "
            f"({profile.get('weight_bytes', 0):.0f} bytes after cast)",
        ),
        neuron_cc_line("INFO", "Compiler status PASS", component="root"),
    ]
    return "\n".join(lines) + "\n"
