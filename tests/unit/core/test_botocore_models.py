"""botocore's models as the platform loads them: service models without prose, everything else intact."""

from __future__ import annotations

import gzip
import json
import tracemalloc

from neurondock_platform import botocore_models, catalog, service_model


def test_service_models_lose_their_prose_but_keep_every_key(tmp_path):
    model = {
        "documentation": "long prose",
        "shapes": {"S": {"type": "structure", "members": {"documentation": {"shape": "T"}}, "documentation": "x"}},
    }
    (tmp_path / "service-2.json.gz").write_bytes(gzip.compress(json.dumps(model).encode()))
    rules = {"parameters": {"Region": {"type": "String", "documentation": "kept"}}}
    (tmp_path / "endpoint-rule-set-1.json").write_text(json.dumps(rules))
    files = botocore_models.UndocumentedFiles()

    loaded = files.load_file(str(tmp_path / "service-2"))

    assert loaded["documentation"] == "" and loaded["shapes"]["S"]["documentation"] == ""
    assert loaded["shapes"]["S"]["members"] == {"documentation": {"shape": "T"}}  # a member, not prose
    assert files.load_file(str(tmp_path / "endpoint-rule-set-1")) == rules
    assert files.exists(str(tmp_path / "service-2")) and not files.exists(str(tmp_path / "paginators-1"))
    assert files.load_file(str(tmp_path / "paginators-1")) is None


def test_the_endpoint_table_keeps_only_the_services_asked_and_every_partition(tmp_path):
    table = {
        "version": 3,
        "partitions": [
            {"partition": p, "regions": {"r": {}}, "defaults": {"x": 1}, "services": {"s3": {"d": p}, "ec2": {}}}
            for p in ("aws", "aws-cn")
        ],
    }
    (tmp_path / "endpoints.json").write_text(json.dumps(table))

    kept = botocore_models.UndocumentedFiles(endpoint_services={"s3"}).load_file(str(tmp_path / "endpoints"))

    partitions = [{**p, "services": {"s3": p["services"]["s3"]}} for p in table["partitions"]]
    assert kept == {**table, "partitions": partitions}
    assert botocore_models.UndocumentedFiles().load_file(str(tmp_path / "endpoints")) == table


def test_the_sagemaker_model_still_validates_with_its_shapes():
    operation = catalog.sagemaker_service_model().operation_model("CreateEndpointConfig")

    assert operation.documentation == ""
    assert operation.input_shape.required_members == ["EndpointConfigName", "ProductionVariants"]
    assert "ml.inf1.xlarge" in catalog.all_instance_types()


def test_a_model_keeps_only_the_operations_asked_and_the_shapes_they_reach():
    model = {
        "metadata": {"protocol": "json"},
        "operations": {
            "Kept": {"input": {"shape": "In"}, "output": {"shape": "Out"}, "errors": [{"shape": "Oops"}]},
            "Dropped": {"input": {"shape": "Other"}},
        },
        "shapes": {
            "In": {"type": "structure", "members": {"L": {"shape": "List"}, "M": {"shape": "Map"}}},
            "List": {"type": "list", "member": {"shape": "Str"}},
            "Map": {"type": "map", "key": {"shape": "Str"}, "value": {"shape": "In"}},
            "Out": {"type": "structure", "members": {}},
            "Oops": {"type": "structure", "members": {}},
            "Str": {"type": "string"},
            "Other": {"type": "structure", "members": {"E": {"shape": "Enum"}}},
            "Enum": {"type": "string", "enum": ["a"]},
        },
    }

    kept = botocore_models.only_operations(model, ["Kept"], shapes=["Enum"])

    assert kept["metadata"] == model["metadata"] and list(kept["operations"]) == ["Kept"]
    assert set(kept["shapes"]) == {"In", "List", "Map", "Out", "Oops", "Str", "Enum"}


def test_the_api_keeps_only_its_registered_sagemaker_operations(tmp_path):
    from neurondock_platform.api.sagemaker.registry import OPERATIONS
    from neurondock_platform.app import create_app
    from neurondock_platform.config import Settings

    try:
        settings = Settings.from_env({}, data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/db.sqlite")
        create_app(settings, dispatcher=object())  # type: ignore[arg-type]
        model = catalog.sagemaker_service_model()

        assert set(model.operation_names) == set(OPERATIONS)
        assert len(model.shape_names) < 1000  # of ~3,400: the other operations' shapes are gone
        assert "ml.inf1.xlarge" in catalog.all_instance_types()
    finally:
        catalog._SERVED.clear()
        catalog.service_model.cache_clear()
        catalog.all_instance_types.cache_clear()


def test_a_model_read_for_some_operations_is_the_whole_model_pruned():
    from neurondock_platform.api.sagemaker.registry import OPERATIONS

    path = service_model.model_file("sagemaker")
    whole = botocore_models.UndocumentedFiles().load_file(path)
    shapes = ("ProductionVariantInstanceType",)

    kept = botocore_models.load_operations(path, sorted(OPERATIONS), shapes)

    assert json.dumps(kept) == json.dumps(botocore_models.only_operations(whole, sorted(OPERATIONS), shapes))
    assert kept["documentation"] == "" and len(kept["shapes"]) < len(whole["shapes"])


def test_a_served_model_is_never_built_whole(tmp_path, monkeypatch):
    # One operation served of a model whose other shapes parse into far more than their text takes.
    shapes = {"In": {"type": "structure", "members": {}}, catalog._INSTANCE_TYPE_SHAPE: {"type": "string"}}
    members = {f"m{j}": {"shape": "In"} for j in range(8)}
    shapes |= {f"S{i}": {"type": "structure", "members": dict(members)} for i in range(4000)}
    model = {"metadata": {}, "operations": {"Op": {"input": {"shape": "In"}}}, "shapes": shapes}
    text = json.dumps(model)
    (tmp_path / "service-2.json").write_text(text)
    monkeypatch.setattr(service_model, "model_file", lambda name: str(tmp_path / "service-2"))
    monkeypatch.setattr(catalog, "_SERVED", {"made-up": frozenset({"Op"})})
    catalog.service_model.cache_clear()
    tracemalloc.start()
    try:
        served = catalog.service_model("made-up")
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        catalog.service_model.cache_clear()

    assert served.operation_names == ["Op"]
    # The file's bytes and text, and one shape at a time: the whole would be several times the text.
    assert peak < 3 * len(text)
