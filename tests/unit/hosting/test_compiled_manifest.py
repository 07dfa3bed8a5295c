"""CompiledManifest: the one reading of a compiled artifact's manifest.json, shared by every reader."""

from __future__ import annotations

import json

import pytest
from tests.support.manifests import compile_report, write_manifest

from neurondock_platform import compiled_manifest
from neurondock_platform.compiled_manifest import CompiledManifest, CompiledTensor, ManifestError


def test_typed_views_of_a_report():
    report = compile_report(
        inputs=[("ids", [2, 32], "int64"), ("mask", [2, 32], "int64")],
        outputs=[([2, 2], "float32")],
        dynamic_batch=True,
        cores=4,
        device_bytes=1024,
    )
    manifest = CompiledManifest.from_report(report)
    assert manifest.on_inferentia and manifest.dynamic_batch
    assert manifest.inputs == (CompiledTensor("ids", (2, 32), "int64"), CompiledTensor("mask", (2, 32), "int64"))
    assert manifest.outputs == (CompiledTensor("output0", (2, 2), "float32"),)
    assert (manifest.compiled_batch_size, manifest.neuroncores_per_replica) == (2, 4)
    assert manifest.device_memory_per_replica_bytes == 1024
    assert manifest.load_transform == "none"
    assert CompiledManifest.from_bytes(manifest.to_bytes()) == manifest


def test_dim_0_is_dynamic_only_when_compiled_so():
    assert not CompiledManifest.from_report(compile_report(dynamic_batch=False)).dynamic_batch
    assert CompiledManifest.from_report(compile_report(dynamic_batch=True)).dynamic_batch
    assert not CompiledManifest.from_report(compile_report(target="ml_c5")).on_inferentia


def test_projected_device_time_excludes_the_measured_cpu_segments():
    report = compile_report(inf1_latency_ms=3.0)
    report["projection"]["cpu_segments_measured"] = [{"segment": "cpu$4", "p50_ms": 1.0}, {"p50_ms": None}]
    assert CompiledManifest.from_report(report).projected_device_seconds() == pytest.approx(0.002)
    assert CompiledManifest.from_report(compile_report()).projected_device_seconds() is None


def test_load_tells_ours_from_a_users_own_manifest(tmp_path):
    assert compiled_manifest.load(tmp_path) is None
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "my model", "version": 3}))
    assert compiled_manifest.load(tmp_path) is None
    (tmp_path / "manifest.json").write_text("not json")
    assert compiled_manifest.load(tmp_path) is None
    write_manifest(tmp_path)
    loaded = compiled_manifest.load(tmp_path)
    assert loaded is not None and loaded.inputs[0].name == "input0"


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda r: r.pop("resources"), "manifest.json has no resources object"),
        (lambda r: r["resources"].pop("static_shapes"), "manifest.json has no resources.static_shapes object"),
        (lambda r: r["resources"].update(compiled_batch_size=0), "resources.compiled_batch_size is not a positive"),
        (lambda r: r["resources"]["static_shapes"]["inputs"][0].pop("dtype"), "static shape 0 of the inputs"),
        (lambda r: r.pop("target"), "manifest.json has no target"),
    ],
)
def test_a_broken_manifest_of_ours_says_what_it_lacks(damage, reason):
    report = compile_report()
    damage(report)
    with pytest.raises(ManifestError, match=reason):
        CompiledManifest.from_report(report)
