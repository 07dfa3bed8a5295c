"""Analytic NeuronCore-v1 model calibrated on AWS's published Inf1 benchmarks; projections and cost per 1M.

Per Neuron subgraph on one core (docs/compiler.md "Projection"):
    t_tensor = gemm_flops / (eta_gemm * rows / (rows + rows_half) * 16 TFLOPS)
             + conv_flops / (eta_conv * 16 TFLOPS)
    t_vs     = vector_ops / 0.23e12 + scalar_ops / 0.97e12 + copy_elements / 0.23e12
    t_dram   = weight_bytes / (50 GB/s / active cores on the chip); zero if the weights fit the core's cache
    t_core   = max(t_compute, t_dram) + overlap * min(t_compute, t_dram)
    latency  = sum over subgraphs (call_overhead + io_bytes / host_bw + t_core) + measured CPU segments
Fitted: eta_gemm, rows_half, eta_conv, call_overhead, overlap. Everything it produces is projected.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from neurondock_platform import catalog
from neurondock_platform.catalog import InstanceType, Price

from ._profile import WorkloadProfile, reference_profile
from ._published import G4DN_BERT_ANCHOR_USD_PER_MILLION, PUBLISHED_BENCHMARKS, PublishedBenchmark

PROJECTED = "projected, not measured on Inferentia"
# Assumptions the published sources do not give; shown in every report.
WEIGHT_CACHE_BYTES_PER_CORE = 12 * 1024**2
HOST_DEVICE_BYTES_PER_S = 8e9
G4DN_FIXED_OVERHEAD_S = 1e-4
# The sizes a report projects: every inf1 size, and the three smallest g4dn and c5 sizes to compare with.
INF1 = catalog.family("inf1")
G4DN = tuple(catalog.CATALOG[f"ml.g4dn.{size}"] for size in ("xlarge", "2xlarge", "4xlarge"))
C5 = tuple(catalog.CATALOG[f"ml.c5.{size}"] for size in ("xlarge", "2xlarge", "4xlarge"))
ASSUMPTIONS: dict[str, Any] = {
    "weight_cache_bytes_per_core": WEIGHT_CACHE_BYTES_PER_CORE,
    "host_device_bytes_per_s": HOST_DEVICE_BYTES_PER_S,
    "vector_flops_per_core": catalog.VECTOR_FLOPS_PER_CORE,
    "scalar_flops_per_core": catalog.SCALAR_FLOPS_PER_CORE,
    "g4dn_fixed_overhead_s": G4DN_FIXED_OVERHEAD_S,
    "notes": [
        "on-core weight cache ~12 MiB: AWS's pipeline rule implies ~5M BF16 weights per core; SRAM size is unpublished",
        "host<->device bandwidth 8 GB/s: not published for Inf1",
        "vector/scalar throughput derived from NeuronCore-v2's '10x'/'3x' claims",
        "CPU segments take as long on the inf1 host's vCPUs as measured here",
    ],
}


@dataclass(frozen=True)
class CoreModel:
    """Fitted parameters of the NeuronCore-v1 model."""

    eta_gemm: float
    rows_half: float
    eta_conv: float
    call_overhead_s: float
    overlap: float

    def to_vector(self) -> list[float]:
        """Return unconstrained coordinates for the optimiser."""
        return [
            math.log(self.eta_gemm / (1 - self.eta_gemm)),
            math.log(self.rows_half),
            math.log(self.eta_conv / (1 - self.eta_conv)),
            math.log(self.call_overhead_s),
            math.log(self.overlap / (1 - self.overlap)),
        ]

    @staticmethod
    def from_vector(v: Sequence[float]) -> CoreModel:
        """Map unconstrained coordinates back to parameters."""
        sig = lambda x: 1.0 / (1.0 + math.exp(-max(min(x, 50.0), -50.0)))  # noqa: E731
        return CoreModel(sig(v[0]), math.exp(min(v[1], 20.0)), sig(v[2]), math.exp(min(v[3], 5.0)), sig(v[4]))


INITIAL = CoreModel(eta_gemm=0.5, rows_half=200.0, eta_conv=0.12, call_overhead_s=5e-4, overlap=0.5)


def stage_time(p: WorkloadProfile, m: CoreModel, *, pipeline_cores: int = 1, active_cores: int = 1) -> float:
    """Return the device time of one pipeline stage (the whole subgraph when pipeline_cores == 1)."""
    rows = p.gemm_rows
    t_tensor = (
        p.gemm_flops / (m.eta_gemm * rows / (rows + m.rows_half) * catalog.TENSOR_FLOPS_PER_CORE)
        if p.gemm_flops
        else 0.0
    )
    t_tensor += p.conv_flops / (m.eta_conv * catalog.TENSOR_FLOPS_PER_CORE)
    t_vs = (
        p.vector_ops + p.copy_bytes / 2
    ) / catalog.VECTOR_FLOPS_PER_CORE + p.scalar_ops / catalog.SCALAR_FLOPS_PER_CORE
    compute = (t_tensor + t_vs) / pipeline_cores
    per_core_weights = p.weight_bytes / pipeline_cores
    cached = per_core_weights <= WEIGHT_CACHE_BYTES_PER_CORE
    t_dram = 0.0 if cached else per_core_weights / (catalog.DRAM_BYTES_PER_S_PER_CHIP / max(active_cores, 1))
    return max(compute, t_dram) + m.overlap * min(compute, t_dram)


def _io_time(p: WorkloadProfile) -> float:
    return p.io_bytes / HOST_DEVICE_BYTES_PER_S


def benchmark_prediction(row: PublishedBenchmark, m: CoreModel) -> tuple[float, float | None]:
    """Return (throughput/s, p50 latency s or None) the model predicts for a published row."""
    p = reference_profile(row.model, row.batch)
    if row.mode == "pipeline":
        stage = stage_time(p, m, pipeline_cores=row.cores_used, active_cores=4)
        latency = m.call_overhead_s + _io_time(p) + stage * row.cores_used
        return row.batch / max(stage, m.call_overhead_s), latency
    if row.mode == "real-time":
        latency = m.call_overhead_s + _io_time(p) + stage_time(p, m, active_cores=1)
        return row.batch / latency, latency
    service = stage_time(p, m, active_cores=min(row.cores_used, 4)) + _io_time(p)
    return row.cores_used * row.batch / service, None


def _loss(m: CoreModel, rows: Sequence[PublishedBenchmark]) -> float:
    total = 0.0
    for row in rows:
        throughput, latency = benchmark_prediction(row, m)
        total += math.log(throughput / row.throughput) ** 2
        if latency is not None:
            total += math.log(latency * 1e3 / row.p50_ms) ** 2
    return total


def _nelder_mead(f: Callable[[list[float]], float], x0: list[float], iterations: int, step: float = 0.5) -> list[float]:
    n = len(x0)
    points = [list(x0)] + [[x + (step if i == j else 0.0) for j, x in enumerate(x0)] for i in range(n)]
    values = [f(p) for p in points]
    for _ in range(iterations):
        order = sorted(range(n + 1), key=values.__getitem__)
        points, values = [points[i] for i in order], [values[i] for i in order]
        if values[-1] - values[0] < 1e-12:
            break
        centroid = [sum(p[j] for p in points[:-1]) / n for j in range(n)]
        worst = points[-1]
        reflected = [c + (c - w) for c, w in zip(centroid, worst, strict=True)]
        fr = f(reflected)
        if fr < values[0]:
            expanded = [c + 2 * (c - w) for c, w in zip(centroid, worst, strict=True)]
            fe = f(expanded)
            points[-1], values[-1] = (expanded, fe) if fe < fr else (reflected, fr)
        elif fr < values[-2]:
            points[-1], values[-1] = reflected, fr
        else:
            contracted = [c + 0.5 * (w - c) for c, w in zip(centroid, worst, strict=True)]
            fc = f(contracted)
            if fc < values[-1]:
                points[-1], values[-1] = contracted, fc
            else:
                best = points[0]
                points = [best] + [[b + 0.5 * (x - b) for b, x in zip(best, p, strict=True)] for p in points[1:]]
                values = [values[0]] + [f(p) for p in points[1:]]
    return points[min(range(n + 1), key=values.__getitem__)]


def fit(rows: Sequence[PublishedBenchmark], start: CoreModel = INITIAL, iterations: int = 600) -> CoreModel:
    """Fit the model to published rows by least squares on log throughput and log latency."""
    best = _nelder_mead(lambda v: _loss(CoreModel.from_vector(v), rows), start.to_vector(), iterations)
    return CoreModel.from_vector(best)


def _residual(projected: float, published: float) -> float:
    return round(100.0 * (projected / published - 1.0), 1)


@lru_cache(maxsize=1)
def calibration() -> dict[str, Any]:
    """Fit on every published row; report in-sample and leave-one-out residuals (percent)."""
    model = fit(PUBLISHED_BENCHMARKS)
    table: list[dict[str, Any]] = []
    for row in PUBLISHED_BENCHMARKS:
        throughput, latency = benchmark_prediction(row, model)
        # Start from the prior, not the full fit, so a held-out row cannot leak into its own prediction.
        held_out = fit([r for r in PUBLISHED_BENCHMARKS if r is not row])
        loo_throughput, _ = benchmark_prediction(row, held_out)
        table.append(
            {
                "benchmark": row.key,
                "model": row.model,
                "instance": row.instance,
                "mode": row.mode,
                "batch": row.batch,
                "published_throughput": row.throughput,
                "projected_throughput": round(throughput, 1),
                "throughput_residual_pct": _residual(throughput, row.throughput),
                "throughput_residual_leave_one_out_pct": _residual(loo_throughput, row.throughput),
                "published_p50_ms": row.p50_ms,
                "projected_latency_ms": round(latency * 1e3, 2) if latency is not None else None,
                "latency_residual_pct": _residual(latency * 1e3, row.p50_ms) if latency is not None else None,
            }
        )
    residuals: list[float] = [abs(r["throughput_residual_pct"]) for r in table]
    residuals += [abs(r["latency_residual_pct"]) for r in table if r["latency_residual_pct"] is not None]
    return {
        "label": PROJECTED,
        "source": "aws-neuron-sdk about-neuron/benchmarks/inf1 (Neuron 2.20, torch 1.13.1)",
        "fitted_parameters": asdict(model),
        "rows": table,
        "max_abs_residual_pct": max(residuals),
        "within_25pct": sum(1 for r in residuals if r <= 25.0),
        "compared": len(residuals),
        "notes": [
            "batch rows compare throughput only: their p50 depends on each benchmark's worker count",
            "eta_conv rests on the single published PyTorch CNN row (ResNet-50), so CNN projections are the "
            "least "
            "certain; held out, eta_conv stays at its prior (0.12, in the 0.1-0.3 range assumed for CNNs)",
            "leave-one-out: each row predicted by a fit to the other rows, started from the prior",
        ],
        "_model": model,
    }


def core_model() -> CoreModel:
    """Return the calibrated model."""
    model: CoreModel = calibration()["_model"]
    return model


def usd_per_hour(price: Price | None) -> float:
    """Return a catalog price's hourly rate, 0 where the catalog has no sourced price."""
    return price.usd_per_hour if price is not None else 0.0


def price_basis() -> dict[str, Any]:
    """Return the report's note on which prices the costs use, and of when."""
    xlarge = catalog.CATALOG["ml.inf1.xlarge"]
    sagemaker, ec2 = xlarge.sagemaker_on_demand, xlarge.ec2_on_demand
    assert sagemaker is not None and ec2 is not None
    return {
        "basis": "EC2 on-demand list price, us-east-1, Linux (not live prices)",
        "as_of": catalog.NEURON_SDK_AS_OF,
        "as_of_note": "date of the aws-neuron-sdk snapshot whose NeuronPerf table gives the inf1 prices; g4dn "
        "and c5 come from third-party list-price tables that agree with each other",
        "sagemaker_note": "SageMaker ml.* hosting prices are higher than EC2 (e.g. ml.inf1.xlarge "
        f"~${sagemaker.usd_per_hour:g}/h vs ${ec2.usd_per_hour:g}/h; third-party tables, not verified); "
        "cost_per_million_usd uses the EC2 basis",
        "ri_effective_note": "AWS's own benchmark tables use RI-effective inf1 rates (about half); shown as "
        "cost_per_million_usd_ri",
    }


def cost_per_million(usd_per_hour: float, throughput: float) -> float | None:
    """Return $ per million inferences: `$/h * 1e6 / (3600 * throughput)` (AWS's and NeuronPerf's formula)."""
    if throughput <= 0 or usd_per_hour <= 0:
        return None
    return round(usd_per_hour * 1e6 / (3600.0 * throughput), 4)


def project_inf1(
    subgraphs: Sequence[WorkloadProfile],
    cpu_seconds: float,
    *,
    batch: int,
    pipeline_cores: int,
    host_seconds_per_call: float = 0.0,
) -> list[dict[str, Any]]:
    """Project latency, throughput and cost on each ml.inf1 size."""
    m = core_model()
    results = []
    for inst in INF1:
        entry: dict[str, Any] = {
            "instance_type": inst.name,
            "label": PROJECTED,
            "neuron_cores": inst.neuron_cores,
            "batch_size": batch,
        }
        if pipeline_cores > inst.neuron_cores:
            entry["fits"] = False
            entry["reason"] = f"needs {pipeline_cores} NeuronCores for one replica; {inst.name} has {inst.neuron_cores}"
            results.append(entry)
            continue
        replicas = inst.neuron_cores // pipeline_cores
        active = min(pipeline_cores, catalog.NEURON_CORES_PER_CHIP)
        busy = min(replicas * pipeline_cores, catalog.NEURON_CORES_PER_CHIP)
        io = sum(_io_time(p) for p in subgraphs)
        calls = len(subgraphs) * m.call_overhead_s
        device_rt = sum(
            stage_time(p, m, pipeline_cores=pipeline_cores, active_cores=active) * pipeline_cores for p in subgraphs
        )
        latency = calls + io + device_rt + cpu_seconds
        stage = sum(stage_time(p, m, pipeline_cores=pipeline_cores, active_cores=busy) for p in subgraphs)
        per_replica = batch / max(
            stage + io / pipeline_cores, m.call_overhead_s * len(subgraphs) / pipeline_cores, 1e-9
        )
        host_cap = inst.vcpus * batch / max(cpu_seconds + host_seconds_per_call, 1e-9)
        throughput = min(replicas * per_replica, host_cap)
        entry.update(
            {
                "fits": True,
                "replicas": replicas,
                "latency_ms": round(latency * 1e3, 3),
                "throughput_per_s": round(throughput, 1),
                "bottleneck": "host CPU" if host_cap < replicas * per_replica else "NeuronCores",
                "cost_per_million_usd": cost_per_million(usd_per_hour(inst.ec2_on_demand), throughput),
                "cost_per_million_usd_ri": cost_per_million(usd_per_hour(inst.ri_effective), throughput),
                "usd_per_hour": usd_per_hour(inst.ec2_on_demand),
            }
        )
        results.append(entry)
    return results


@lru_cache(maxsize=1)
def g4dn_efficiency() -> float:
    """Fit T4 efficiency to AWS's "$0.20 per million BERT-base requests on g4dn.xlarge" (one anchor)."""
    p = reference_profile("bert-base", 1)
    throughput = usd_per_hour(G4DN[0].ec2_on_demand) * 1e6 / (3600.0 * G4DN_BERT_ANCHOR_USD_PER_MILLION)
    compute = 1.0 / throughput - _gpu_memory_time(p)
    return p.total_flops / (compute * catalog.T4_FP16_FLOPS)


def _gpu_memory_time(p: WorkloadProfile) -> float:
    # Weights once, element-wise work read and written once each in FP16, plus a fixed launch cost.
    elementwise = (p.vector_ops + p.scalar_ops + p.copy_bytes) * 2
    return (p.weight_bytes + elementwise) / catalog.T4_MEM_BYTES_PER_S + G4DN_FIXED_OVERHEAD_S


def _comparison_row(
    inst: InstanceType, label: str, batch: int, latency_s: float, throughput: float, basis: str
) -> dict[str, Any]:
    """One projected row for a comparison instance type, priced from the catalog."""
    price = usd_per_hour(inst.ec2_on_demand)
    return {
        "instance_type": inst.name,
        "label": label,
        "batch_size": batch,
        "latency_ms": round(latency_s * 1e3, 3),
        "throughput_per_s": round(throughput, 1),
        "cost_per_million_usd": cost_per_million(price, throughput),
        "usd_per_hour": price,
        "basis": basis,
    }


def project_gpu(whole: WorkloadProfile, batch: int) -> list[dict[str, Any]]:
    """Project g4dn (T4, FP16) from peak figures and the one published anchor."""
    eta = g4dn_efficiency()
    latency = whole.total_flops / (eta * catalog.T4_FP16_FLOPS) + _gpu_memory_time(whole)
    basis = (
        f"T4 65 TFLOPS FP16 / 320 GB/s at efficiency {eta:.2f}, fitted to AWS's $0.20 per million BERT-base "
        "requests on g4dn.xlarge (one anchor, no residual available; the anchor's batch size is unpublished and "
        "batch 1 is assumed, so this leans optimistic for the GPU)"
    )
    label = PROJECTED.replace("Inferentia", "a T4 GPU")
    return [_comparison_row(inst, label, batch, latency, inst.gpus * batch / latency, basis) for inst in G4DN]


def project_cpu(measured_seconds: float, threads: int, batch: int, host: str) -> list[dict[str, Any]]:
    """Project ml.c5 sizes from the CPU latency measured here."""
    label = "projected from the CPU measurement on this host"
    basis = (
        f"measured here ({host}, {threads} thread(s)); assumes one c5 vCPU ~ one core here and linear scaling "
        "across replicas"
    )
    out = []
    for inst in C5:
        replicas = max(1, inst.vcpus // max(threads, 1))
        throughput = replicas * batch / measured_seconds if measured_seconds > 0 else 0.0
        out.append({**_comparison_row(inst, label, batch, measured_seconds, throughput, basis), "replicas": replicas})
    return out
