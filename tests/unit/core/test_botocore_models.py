"""botocore's models as the platform loads them: service models without prose, everything else intact."""

from __future__ import annotations

import gzip
import json

from neurondock_platform import botocore_models, catalog


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


def test_the_sagemaker_model_still_validates_with_its_shapes():
    operation = catalog.sagemaker_service_model().operation_model("CreateEndpointConfig")

    assert operation.documentation == ""
    assert operation.input_shape.required_members == ["EndpointConfigName", "ProductionVariants"]
    assert "ml.inf1.xlarge" in catalog.all_instance_types()
