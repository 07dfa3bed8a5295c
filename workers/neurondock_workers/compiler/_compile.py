"""compile_model: the emulated torch-neuron trace + neuron-cc pipeline, end to end."""

from __future__ import annotations

import json
import shutil
import time
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from neurondock_platform.services.compilation_inputs import SUPPORTED_TARGETS

from . import _artifact, _execution, _graph, _log, _numerics, _projection
from ._analysis import (
    NodeInfo,
    add_node_cost,
    analyze_log_lines,
    analyze_model,
    constant_bytes,
    describe_nodes,
)
from ._cache import CompileCache
from ._grammar import CompilerOptions, InputShape, parse_compiler_options, parse_data_input_config
from ._inputs import (
    copy_code_dir,
    infer_input_dtypes,
    is_allocation_failure,
    load_torchscript,
    make_example_inputs,
    run_reference,
    stage_input,
)
from ._partition import PartitionPlan, partition
from ._profile import ProfileBuilder, WorkloadProfile
from ._resources import estimate_resources
from .errors import CompilationError, CompilerError, CompileResourceError, NothingOnNeuronError, TargetError

COMPILER_NAME = "neurondock-neuron-emu"
COMPILER_VERSION = "0.1.0"
EMULATES = "torch-neuron trace (Inf1) with neuron-cc; NeuronCore-v1"


@dataclass
class CompileResult:
    """What a finished compile hands to the API/task layer."""

    target: str
    artifact_path: Path
    artifact_sha256: str
    artifact_size: int
    log_path: Path
    report: dict[str, Any]
    compile_seconds: float
    cache_hit: bool
    cache_key: str
    compiler_version: str = COMPILER_VERSION
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe form (the sandbox child sends results this way)."""
        data = asdict(self)
        data["artifact_path"] = str(self.artifact_path)
        data["log_path"] = str(self.log_path)
        return data

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> CompileResult:
        """Rebuild a result sent by `to_dict`."""
        values = dict(data)
        values["artifact_path"] = Path(values["artifact_path"])
        values["log_path"] = Path(values["log_path"])
        return CompileResult(**values)

    def summary(self) -> dict[str, Any]:
        """Return the headline numbers a console or DescribeCompilationJob extension would show."""
        analyze = self.report.get("analyze") or {}
        execution = self.report.get("execution") or {}
        # An ml_c5 compile partitions nothing: its report's "partition" is null.
        partition = self.report.get("partition") or {}
        drift = (self.report.get("numerics") or {}).get("drift") or {}
        return {
            "emulated": True,
            "target": self.target,
            "percent_supported": analyze.get("percent_supported"),
            "neuron_subgraphs": partition.get("neuron_subgraphs"),
            "percent_compiled": partition.get("percent_compiled"),
            "drift_max_abs_error": drift.get("max_abs_error"),
            "execution": execution.get("selected"),
            "speedup_vs_uncompiled": execution.get("speedup_vs_uncompiled"),
            "cache_hit": self.cache_hit,
        }


def _host_cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def _output_name(source: Path, target: str) -> str:
    stem = source.name
    for suffix in (".tar.gz", ".tgz", ".tar", ".pth", ".pt"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return f"{stem or 'model'}-{target}.tar.gz"


def compile_model(
    model_path_or_dir: str | Path,
    input_config: str | Mapping[str, Any] | Sequence[Any],
    target: str = "ml_inf1",
    compiler_options: CompilerOptions | str | Mapping[str, Any] | Sequence[str] | None = None,
    workdir: str | Path = "compile",
    *,
    cache: CompileCache | None = None,
    measure_budget_s: float = 1.5,
) -> CompileResult:
    """Compile a TorchScript model for `ml_inf1` (emulated Neuron) or `ml_c5` (optimised CPU TorchScript).

    `model_path_or_dir` is the Neo input: a model.tar.gz, an unpacked directory, or a bare .pt/.pth.
    Writes `<workdir>/<name>-<target>.tar.gz` and `<workdir>/compile.log`. Raises CompilerError
    subclasses whose `failure_reason` is the FailureReason to record; the log is written either way.
    """
    started = time.perf_counter()
    if target not in SUPPORTED_TARGETS:
        raise TargetError(target=target, supported=", ".join(SUPPORTED_TARGETS))
    options = parse_compiler_options(compiler_options)
    specs = parse_data_input_config(input_config)
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    source = Path(model_path_or_dir)
    staged = stage_input(source, work)
    key = CompileCache.key(staged.sha256, options, specs, target, COMPILER_VERSION)
    artifact_path = work / _output_name(source, target)
    log_path = work / _artifact.LOG_FILE
    if cache is not None and (entry := cache.get(key)) is not None:
        shutil.copyfile(entry.artifact, artifact_path)
        shutil.copyfile(entry.log, log_path)
        result = CompileResult.from_dict(
            {**entry.result, "artifact_path": str(artifact_path), "log_path": str(log_path)}
        )
        result.cache_hit = True
        result.compile_seconds = time.perf_counter() - started
        return result
    log = _log.CompileLog()
    log.info(
        f"{COMPILER_NAME} {COMPILER_VERSION} (emulated: true) compiling for {target}; emulates {EMULATES}; "
        "no neuron-cc runs and no NEFF binary is produced"
    )
    pipeline = _Pipeline(options, specs, target, work, log, measure_budget_s)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = pipeline.run(staged.model_file, staged.code_dir)
        for warning in caught:
            text = str(warning.message).splitlines()[0] if str(warning.message) else ""
            if not (issubclass(warning.category, DeprecationWarning) and "torch.jit" in text):
                log.warning(f"{warning.category.__name__}: {text}")
    except CompilerError as exc:
        log.error(exc.message)
        log_path.write_text(log.text())
        raise
    except (MemoryError, RuntimeError) as exc:
        log.error(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        log_path.write_text(log.text())
        if is_allocation_failure(exc):
            raise CompileResourceError(resource="memory", limit="the worker's memory limit") from None
        raise CompilationError(reason=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    report["input"] = {
        "source": staged.source_name,
        "model_file": staged.model_file.name,
        "sha256": staged.sha256,
        "files": staged.files,
        "data_input_config": [s.to_dict() for s in specs],
    }
    report["cache_key"] = key
    log_text = log.text()
    (pipeline.build / _artifact.LOG_FILE).write_text(log_text)
    log_path.write_text(log_text)
    sha, size = _artifact.write_artifact(pipeline.build, artifact_path, report)
    elapsed = time.perf_counter() - started
    result = CompileResult(
        target,
        artifact_path,
        sha,
        size,
        log_path,
        report,
        elapsed,
        False,
        key,
        stage_seconds=pipeline.stage_seconds,
    )
    if cache is not None:
        cache.put(key, artifact_path, log_path, result.to_dict())
    return result


class _Pipeline:
    """The stages of one compile, sharing the loaded model, frozen graph and example inputs."""

    def __init__(
        self,
        options: CompilerOptions,
        specs: list[InputShape],
        target: str,
        work: Path,
        log: _log.CompileLog,
        budget: float,
    ) -> None:
        self.options, self.specs, self.target, self.work, self.log, self.budget = (
            options,
            specs,
            target,
            work,
            log,
            budget,
        )
        self.build = work / "build"
        shutil.rmtree(self.build, ignore_errors=True)
        self.build.mkdir(parents=True)
        self.stage_seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def _stage(self, name: str) -> None:
        now = time.perf_counter()
        self.stage_seconds[name] = round(now - self._t, 4)
        self._t = now

    def run(self, model_file: Path, code_dir: Path | None) -> dict[str, Any]:
        """Run every stage and return the report (the manifest body)."""
        module = load_torchscript(model_file)
        frozen = _graph.freeze(module)
        graph = frozen.graph
        dtypes = infer_input_dtypes(graph, self.specs)
        inputs = make_example_inputs(self.specs, dtypes)
        reference = run_reference(module, self.specs, inputs)
        # More example batches make drift and equivalence checks robust to a lucky draw (e.g. all-ReLU-dead).
        input_sets = [inputs] + [make_example_inputs(self.specs, dtypes, seed=s) for s in (1, 2)]
        references = [reference] + [run_reference(module, self.specs, xs) for xs in input_sets[1:]]
        self._stage("load_and_trace")

        infos = describe_nodes(graph)
        analysis = analyze_model(graph)
        for line in analyze_log_lines(analysis):
            self.log.info(line)
        plan = self._partition(infos, graph) if self.target == "ml_inf1" else None
        self._stage("analyze_and_partition")

        keep = {n for seg in plan.cpu_segments for n in seg.inputs} if plan else set()
        metas, kept = _graph.capture_values(graph, inputs, keep)
        nodes = {
            (n.outputsAt(0).debugName() if n.outputsSize() else f"#{i}"): n
            for i, n in enumerate(_graph.top_nodes(graph))
        }
        batch = self.specs[0].shape[0]
        subgraph_profiles = [
            self._profile(seg.nodes, nodes, metas, batch, seg.inputs + seg.outputs)
            for seg in (plan.neuron_segments if plan else [])
        ]
        whole = self._profile(infos, nodes, metas, batch, [])
        cpu_timings = self._time_cpu_segments(plan, graph, nodes, kept) if plan else []
        self._log_subgraphs(plan, metas, subgraph_profiles)
        self._stage("profile")

        fp32_bytes, _ = constant_bytes(graph)
        # From here the frozen module becomes the emulation; the analysis above is already plain data.
        emulated = frozen
        _numerics.fold_device_constants(emulated.graph)
        neuron_keys = {n.key for seg in plan.neuron_segments for n in seg.nodes} if plan else set()
        stats = _numerics.apply_cast_policy(emulated, neuron_keys, self.options) if plan else {}
        torch._C._jit_pass_dce(emulated.graph)
        with torch.no_grad():
            emulated_outs = [emulated(*xs) for xs in input_sets]
        drift = _numerics.compare_outputs(emulated_outs, references)
        self._stage("numerics")

        fp32 = None
        if self.options.execution_policy != "device-numerics" and plan is not None:
            fp32 = _graph.freeze(module)
            _numerics.fold_device_constants(fp32.graph)
        candidates, notes = _execution.build_candidates(emulated, module, self.options.optimization_level, fp32)
        _execution.measure(candidates, inputs, budget_s=self.budget)
        execution = _execution.select(
            candidates, emulated_outs, drift, input_sets, self.target, self.options.execution_policy
        )
        execution["notes"] = notes
        execution["load_transform"] = _artifact.load_transform_for(execution["selected"])
        chosen = {
            _execution.UNCOMPILED: module,
            _execution.FROZEN_FP32: fp32,
            _execution.OPTIMIZED_FP32: fp32,
        }.get(execution["selected"]) or emulated
        chosen.save(str(self.build / _artifact.MODEL_FILE))
        self.log.info(
            f"Selected CPU execution {execution['selected']!r}: p50 {execution['selected_p50_ms']} ms vs "
            f"uncompiled {execution['uncompiled_p50_ms']} ms "
            f"(measured here, {execution['threads']} thread(s))"
        )
        self._stage("execution")

        after_bytes = _cast_bytes(emulated.graph, stats, self.options, self.target)
        neuron_total = _sum_profiles(subgraph_profiles, batch)
        resources = _resources_section(
            plan, neuron_total, fp32_bytes, after_bytes, metas, inputs, reference, self.options, batch
        )
        dynamic = self._check_dynamic_batch(emulated, inputs)
        if dynamic is not None:
            resources["dynamic_batch_check"] = dynamic
        cpu_seconds = sum(t["p50_ms"] for t in cpu_timings if t["p50_ms"] is not None) / 1e3
        projection = self._project(subgraph_profiles, whole, cpu_seconds, execution, batch)
        projection["cpu_segments_measured"] = cpu_timings
        self._stage("resources_and_projection")

        copied = copy_code_dir(code_dir, self.build)
        report = {
            "emulated": True,
            "device": "emulated-inferentia-v1" if self.target == "ml_inf1" else "cpu",
            "compiler": {
                "name": COMPILER_NAME,
                "version": COMPILER_VERSION,
                "emulates": EMULATES,
                "torch": torch.__version__,
            },
            "target": self.target,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "options": self.options.to_dict(),
            "model_file": _artifact.MODEL_FILE,
            "code_files": copied,
            "example_inputs": {
                "seed": 0,
                "inputs": [
                    {"name": s.name, "shape": list(s.shape), "dtype": d}
                    for s, (d, _) in zip(self.specs, dtypes, strict=True)
                ],
            },
            "analyze": analysis,
            "partition": plan.to_dict(metas) if plan else None,
            "numerics": {
                **_numerics.cast_summary(self.options, self.target, stats),
                "drift": drift,
                "drift_label": "measured on 3 seeded example batches: emulated device numerics vs FP32",
            },
            "resources": resources,
            "execution": execution,
            "projection": projection,
            "stage_seconds": self.stage_seconds,
        }
        if plan:
            self._write_neff_manifests(plan, metas, subgraph_profiles)
        return report

    def _partition(self, infos: list[NodeInfo], graph: _graph.Graph) -> PartitionPlan:
        unsupported = Counter(n.kind for n in infos if not n.supported)
        inputs = [v.debugName() for v in _graph.graph_inputs(graph)]
        outputs = [v.debugName() for v in graph.outputs()]
        arithmetic = sum(1 for n in infos if n.arithmetic)
        try:
            plan = partition(
                infos,
                inputs,
                outputs,
                minimum_segment_size=self.options.minimum_segment_size,
                single_fusion_ratio_threshold=self.options.single_fusion_ratio_threshold,
                fallback=self.options.fallback,
            )
        except NothingOnNeuronError:
            _log.log_partition_start(self.log, unsupported, arithmetic, 0)
            self.log.error(
                "No operations were successfully partitioned and compiled to neuron for this model - aborting trace!"
            )
            raise
        _log.log_partition_start(self.log, unsupported, plan.arithmetic_total, plan.arithmetic_fused)
        return plan

    def _profile(
        self,
        members: Sequence[NodeInfo],
        nodes: Mapping[str, Any],
        metas: Mapping[str, _graph.TensorMeta],
        batch: int,
        io_names: Sequence[str],
    ) -> WorkloadProfile:
        builder = ProfileBuilder(batch, 2)
        seen: set[str] = set()
        for info in members:
            add_node_cost(builder, nodes[info.key], metas, seen)
        builder.io(float(sum(metas[n].nbytes for n in io_names if n in metas)))
        return builder.profile

    def _time_cpu_segments(
        self,
        plan: PartitionPlan,
        graph: _graph.Graph,
        nodes: Mapping[str, Any],
        kept: Mapping[str, torch.Tensor],
    ) -> list[dict[str, Any]]:
        timings = []
        for seg in plan.cpu_segments:
            entry: dict[str, Any] = {"segment": seg.name, "p50_ms": None}
            if not seg.inputs or all(n in kept for n in seg.inputs):
                try:
                    fn = _graph.extract_segment(graph, [nodes[n.key] for n in seg.nodes], seg.name.replace("$", "_"))
                    entry["p50_ms"] = round(
                        _execution.time_function(fn.function, [kept[n] for n in fn.inputs]) * 1e3, 4
                    )
                except Exception as exc:  # a segment that cannot stand alone is reported, not fatal
                    entry["note"] = f"not timed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            else:
                entry["note"] = "not timed: takes non-tensor inputs from another segment"
            timings.append(entry)
        return timings

    def _log_subgraphs(
        self,
        plan: PartitionPlan | None,
        metas: Mapping[str, _graph.TensorMeta],
        profiles: Sequence[WorkloadProfile],
    ) -> None:
        if plan is None:
            self.log.info(f"Target {self.target}: no Neuron partitioning; the whole model runs on the CPU in FP32")
            return
        compiled: Counter[str] = Counter()
        for seg, profile in zip(plan.neuron_segments, profiles, strict=True):
            index = int(seg.name.split("$")[1])
            io_config = seg.to_dict(metas)["io_config"]
            command = _log.compile_command(
                str(self.work / "neuron-cc"), index, io_config, self.options.neuron_cc_args()
            )
            _log.log_subgraph(self.log, seg.name, str(self.work / "neuron-cc"), index, command)
            signature = _artifact.sha256_bytes(json.dumps(seg.to_dict(metas), sort_keys=True).encode())
            sub_dir = self.work / "neuron-cc" / str(index)
            sub_dir.mkdir(parents=True, exist_ok=True)
            (sub_dir / "graph_def.neuron-cc.log").write_text(
                _log.subgraph_log(seg.name, profile.to_dict(), seg.op_counts(), signature)
            )
            compiled.update(n.kind for n in seg.nodes if n.arithmetic)
        not_compiled: dict[str, tuple[int, bool]] = {}
        for seg in plan.cpu_segments:
            for node in seg.nodes:
                if node.arithmetic:
                    count, _ = not_compiled.get(node.kind, (0, node.supported))
                    not_compiled[node.kind] = (count + 1, node.supported)
        _log.log_partition_end(self.log, plan.to_dict(metas), compiled, not_compiled, plan.warnings)

    def _check_dynamic_batch(
        self, emulated: torch.jit.ScriptModule, inputs: Sequence[torch.Tensor]
    ) -> dict[str, Any] | None:
        if not self.options.dynamic_batch_size:
            return None
        doubled = [torch.cat([x, x]) for x in inputs]
        try:
            with torch.no_grad():
                emulated(*doubled)
        except Exception as exc:  # the model hard-codes its batch: report it, as torch-neuron fails at load
            message = f"the model does not run at batch {doubled[0].shape[0]}: {str(exc).splitlines()[0]}"
            self.log.warning(f"dynamic_batch_size requested but {message}")
            return {"verified": False, "reason": message}
        return {"verified": True, "checked_batch": int(doubled[0].shape[0])}

    def _project(
        self,
        subgraphs: Sequence[WorkloadProfile],
        whole: WorkloadProfile,
        cpu_seconds: float,
        execution: Mapping[str, Any],
        batch: int,
    ) -> dict[str, Any]:
        calibration = {k: v for k, v in _projection.calibration().items() if not k.startswith("_")}
        measured_s = float(execution["selected_p50_ms"]) / 1e3
        out: dict[str, Any] = {
            "label": _projection.PROJECTED,
            "calibration": calibration,
            "assumptions": _projection.ASSUMPTIONS,
            "prices": _projection.price_basis(),
            "measured_cpu": {
                "label": "measured on this host",
                "host": _host_cpu(),
                "p50_ms": execution["selected_p50_ms"],
                "threads": execution["threads"],
                "batch_size": batch,
            },
            "g4dn": _projection.project_gpu(whole, batch),
            "c5": _projection.project_cpu(measured_s, int(execution["threads"]), batch, _host_cpu()),
            "whole_model_profile": whole.to_dict(),
        }
        if self.target == "ml_inf1":
            out["inf1"] = _projection.project_inf1(
                subgraphs, cpu_seconds, batch=batch, pipeline_cores=self.options.pipeline_cores
            )
            out["subgraph_profiles"] = [p.to_dict() for p in subgraphs]
        return out

    def _write_neff_manifests(
        self, plan: PartitionPlan, metas: Mapping[str, _graph.TensorMeta], profiles: Sequence[WorkloadProfile]
    ) -> None:
        neff = self.build / "neff"
        neff.mkdir()
        for seg, profile in zip(plan.neuron_segments, profiles, strict=True):
            body = {
                "emulated": True,
                "what": "a description of what neuron-cc's NEFF for this subgraph would contain; no NEFF binary exists",
                "subgraph": seg.to_dict(metas),
                "profile": profile.to_dict(),
                "cast": {"mode": self.options.cast_mode, "dtype": self.options.cast_dtype},
                "neuroncore_pipeline_cores": self.options.pipeline_cores,
            }
            (neff / f"NeuronGraph_{seg.name.split('$')[1]}.neff.json").write_text(json.dumps(body, indent=2))


def _sum_profiles(profiles: Sequence[WorkloadProfile], batch: int) -> WorkloadProfile:
    total = WorkloadProfile(batch=batch, subgraphs=0)
    for p in profiles:
        total = total.merged(p)
    return total


def _cast_bytes(graph: _graph.Graph, stats: Mapping[str, Any], options: CompilerOptions, target: str) -> int:
    total = sum(t.numel() * t.element_size() for _, t in _numerics.iter_float_constants(graph))
    if target != "ml_inf1":
        return total
    # Rounded constants are stored in FP32 on the CPU but occupy 2 bytes per element on the device.
    return total - 2 * int(stats.get("rounded_constant_elements", 0))


def _resources_section(
    plan: PartitionPlan | None,
    neuron: WorkloadProfile,
    fp32_bytes: int,
    after_bytes: int,
    metas: Mapping[str, _graph.TensorMeta],
    inputs: Sequence[torch.Tensor],
    reference: Any,
    options: CompilerOptions,
    batch: int,
) -> dict[str, Any]:
    return estimate_resources(
        plan=plan,
        neuron_profile=neuron,
        constants_fp32_bytes=fp32_bytes,
        constants_after_cast_bytes=after_bytes,
        metas=metas,
        input_metas=[_graph.meta_of(x) for x in inputs],
        output_metas=[_graph.meta_of(t) for t in _numerics.flatten_outputs(reference)],
        options=options,
        batch=batch,
    )
