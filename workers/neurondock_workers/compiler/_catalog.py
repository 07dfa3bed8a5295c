"""Hardware facts, list prices and AWS's published Inf1 benchmarks the projection is built from.

Every figure cites /work/shared/reference/inferentia.md (section in brackets) and, through it, the
aws-neuron-sdk snapshot `81ce03a` (2026-08-21) or the third-party price tables it names.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3

# NeuronCore-v1 / Inferentia chip [§1.2].
TENSOR_FLOPS_PER_CORE = 16e12  # BF16/FP16 TensorEngine peak per NeuronCore-v1
VECTOR_FLOPS_PER_CORE = 0.23e12  # derived from NC-v2's "10x" claim; an estimate
SCALAR_FLOPS_PER_CORE = 0.97e12  # derived from NC-v2's "3x" claim; an estimate
CORES_PER_CHIP = 4
DEVICE_MEMORY_PER_CHIP = 8 * GIB
DRAM_BYTES_PER_S_PER_CHIP = 50e9  # "8 GiB device DRAM @ 50 GiB/s"; AWS's roofline uses 50 GB/s
PEAK_FLOPS_PER_CHIP = 64e12  # used by AWS's batch-size rule [§1.2]
PIPELINE_WEIGHTS_PER_CORE_GROUP = 2e7  # `neuroncore-pipeline-cores = 4 * round(num_weights / 2e7)`

# T4 (g4dn) peak figures [§1.4].
T4_FP16_FLOPS = 65e12
T4_MEM_BYTES_PER_S = 320e9


@dataclass(frozen=True)
class InstanceType:
    """One instance size: accelerators, host resources and its list price."""

    name: str
    family: str
    vcpus: int
    memory_gib: int
    chips: int = 0
    neuron_cores: int = 0
    gpus: int = 0
    usd_per_hour: float = 0.0
    usd_per_hour_ri: float | None = None


INF1 = (
    # chips/cores/vCPU/memory [§1.1]; on-demand $/h from NeuronPerf `_get_cost_per_hour`, RI-effective
    # from `about-neuron/benchmarks/inf1/instance_prices.csv` [§1.4].
    InstanceType(
        "ml.inf1.xlarge", "inf1", 4, 8, chips=1, neuron_cores=4, usd_per_hour=0.228, usd_per_hour_ri=0.110
    ),
    InstanceType(
        "ml.inf1.2xlarge", "inf1", 8, 16, chips=1, neuron_cores=4, usd_per_hour=0.362, usd_per_hour_ri=0.174
    ),
    InstanceType(
        "ml.inf1.6xlarge", "inf1", 24, 48, chips=4, neuron_cores=16, usd_per_hour=1.18, usd_per_hour_ri=0.567
    ),
    InstanceType(
        "ml.inf1.24xlarge",
        "inf1",
        96,
        192,
        chips=16,
        neuron_cores=64,
        usd_per_hour=4.721,
        usd_per_hour_ri=2.269,
    ),
)
G4DN = (
    # $/h agree across third-party price tables; GPU counts from NeuronPerf `_get_num_gpus` [§1.4].
    InstanceType("ml.g4dn.xlarge", "g4dn", 4, 16, gpus=1, usd_per_hour=0.526),
    InstanceType("ml.g4dn.2xlarge", "g4dn", 8, 32, gpus=1, usd_per_hour=0.752),
    InstanceType("ml.g4dn.4xlarge", "g4dn", 16, 64, gpus=1, usd_per_hour=1.204),
)
C5 = (
    # $/h from the AWS Auto Scaling user guide example + price tables [§1.4].
    InstanceType("ml.c5.xlarge", "c5", 4, 8, usd_per_hour=0.17),
    InstanceType("ml.c5.2xlarge", "c5", 8, 16, usd_per_hour=0.34),
    InstanceType("ml.c5.4xlarge", "c5", 16, 32, usd_per_hour=0.68),
)

PRICE_BASIS = {
    "basis": "EC2 on-demand list price, us-east-1, Linux (not live prices)",
    "as_of": "2026-08-21",
    "as_of_note": "date of the aws-neuron-sdk snapshot whose NeuronPerf table gives the inf1 prices; g4dn "
    "and c5 come from third-party list-price tables that agree with each other",
    "sagemaker_note": "SageMaker ml.* hosting prices are higher than EC2 (e.g. ml.inf1.xlarge ~$0.297/h vs "
    "$0.228/h; third-party tables, not verified); cost_per_million_usd uses the EC2 basis",
    "ri_effective_note": "AWS's own benchmark tables use RI-effective inf1 rates (about half); shown as "
    "cost_per_million_usd_ri",
}


@dataclass(frozen=True)
class PublishedBenchmark:
    """One row of AWS's Inf1 performance tables (Neuron 2.20, torch 1.13.1) [§5.1]."""

    key: str
    model: str
    instance: str
    mode: (
        str  # "real-time": one request in flight; "batch": every core busy; "pipeline": one model on N cores
    )
    batch: int
    throughput: float
    p50_ms: float
    cores_used: int


PUBLISHED_BENCHMARKS = (
    PublishedBenchmark("bert-base-cased-b1", "bert-base", "ml.inf1.xlarge", "real-time", 1, 125.7, 7.9, 1),
    PublishedBenchmark("bert-base-uncased-b3", "bert-base", "ml.inf1.xlarge", "real-time", 3, 284.7, 10.5, 1),
    PublishedBenchmark("bert-base-uncased-b6", "bert-base", "ml.inf1.xlarge", "batch", 6, 1180.7, 40.6, 4),
    PublishedBenchmark("bert-base-cased-b8", "bert-base", "ml.inf1.xlarge", "batch", 8, 1095.4, 58.3, 4),
    PublishedBenchmark("bert-base-mrpc-b4", "bert-base", "ml.inf1.xlarge", "batch", 4, 1056.0, 20.0, 4),
    PublishedBenchmark(
        "distilbert-base-b8", "distilbert-base", "ml.inf1.xlarge", "batch", 8, 1876.7, 33.7, 4
    ),
    PublishedBenchmark(
        "distilroberta-base-b6", "distilroberta-base", "ml.inf1.xlarge", "batch", 6, 1512.9, 15.0, 4
    ),
    PublishedBenchmark("resnet50-fp32-b5", "resnet-50", "ml.inf1.xlarge", "batch", 5, 921.5, 21.6, 4),
    PublishedBenchmark(
        "bert-base-pipeline16-b1", "bert-base", "ml.inf1.6xlarge", "pipeline", 1, 2009.1, 5.9, 16
    ),
)

# g4dn anchor: "1 million BERT-base (seq 128) requests for $0.20 on g4dn.xlarge" (AWS ML Blog) [§5.2].
G4DN_BERT_ANCHOR_USD_PER_MILLION = 0.20
