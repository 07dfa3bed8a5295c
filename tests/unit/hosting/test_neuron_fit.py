"""The emulated Neuron runtime's load-time checks, with the runtime's own wording."""

from __future__ import annotations

from tests.support.manifests import write_manifest

from neurondock_workers.hosting.neuron import check_fit, core_range


def _manifest(tmp_path, cores: int, per_replica_bytes: int):
    return write_manifest(tmp_path, cores=cores, device_bytes=per_replica_bytes)


def test_core_range_formats_like_neuron_rt_visible_cores():
    assert core_range([3]) == "3"
    assert core_range([6, 4, 5, 7]) == "4-7"


def test_uncompiled_models_and_cpu_instances_always_fit(tmp_path):
    assert check_fit(tmp_path, {"cores": [0]}) is None
    assert check_fit(_manifest(tmp_path, 4, 1), {}) is None


def test_pipeline_model_on_too_few_cores(tmp_path):
    message = check_fit(_manifest(tmp_path, 4, 1024), {"cores": [1], "chips": [0], "replicas_per_instance": 4})
    assert "NRT:nrt_allocate_neuron_cores" in message
    assert "NeuronCore(s) not available - Requested:4 Available:1" in message
    assert "The PyTorch Neuron Runtime could not be initialized" in message


def test_device_memory_is_accounted_per_chip(tmp_path):
    three_gib = 3 * 1024**3
    fits = {"cores": [0], "chips": [0], "replicas_per_instance": 2}
    assert check_fit(_manifest(tmp_path, 1, three_gib), fits) is None
    too_many = {"cores": [0], "chips": [0], "replicas_per_instance": 4}
    message = check_fit(_manifest(tmp_path, 1, three_gib), too_many)
    assert message.startswith("neuron:mc_alloc: device mempool [0:0] total 8589934592")
    assert "NRT_RESOURCE (4)" in message


def test_a_users_own_manifest_is_not_a_compiled_artifact(tmp_path):
    (tmp_path / "manifest.json").write_text('{"resources": {"neuroncores_per_replica": 64}}')
    assert check_fit(tmp_path, {"cores": [0], "chips": [0]}) is None


def test_a_broken_compiled_manifest_is_refused_with_what_it_lacks(tmp_path):
    (tmp_path / "manifest.json").write_text('{"emulated": true, "compiler": {}, "target": "ml_inf1"}')
    message = check_fit(tmp_path, {"cores": [0], "chips": [0]})
    assert message == "The compiled model cannot be loaded: manifest.json has no resources object."
