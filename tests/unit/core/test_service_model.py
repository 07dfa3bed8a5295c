"""The service models the API reads without botocore's model code answer as botocore's own do."""

from __future__ import annotations

import pytest
from botocore.loaders import Loader
from botocore.model import ServiceModel as BotocoreServiceModel

from neurondock_platform import botocore_models
from neurondock_platform.service_model import ServiceModel, model_file

# Every service the API validates requests of or answers in the Query protocol.
SERVICES = ("sagemaker", "cloudwatch", "application-autoscaling")


def _same(ours, theirs, seen: set[str]) -> None:
    assert (ours.name, ours.type_name) == (theirs.name, theirs.type_name)
    assert ours.metadata == theirs.metadata
    assert ours.serialization == theirs.serialization
    assert ours.required_members == theirs.required_members
    key = f"{ours.name}{sorted(ours.serialization.items())}"
    if key in seen:
        return
    seen.add(key)
    if ours.type_name == "structure":
        assert list(ours.members) == list(theirs.members)
        for name in ours.members:
            _same(ours.members[name], theirs.members[name], seen)
    elif ours.type_name == "list":
        _same(ours.member, theirs.member, seen)
    elif ours.type_name == "map":
        _same(ours.key, theirs.key, seen)
        _same(ours.value, theirs.value, seen)
    elif ours.type_name == "string":
        assert ours.enum == theirs.enum


@pytest.mark.parametrize("service", SERVICES)
def test_every_operations_shapes_read_as_botocores(service):
    description = botocore_models.UndocumentedFiles().load_file(model_file(service))
    ours = ServiceModel(description, service)
    theirs = BotocoreServiceModel(
        Loader(file_loader=botocore_models.UndocumentedFiles()).load_service_model(service, "service-2"), service
    )

    assert ours.operation_names == theirs.operation_names
    assert ours.shape_names == theirs.shape_names
    seen: set[str] = set()
    for name in theirs.operation_names:
        op, their_op = ours.operation_model(name), theirs.operation_model(name)
        for part in ("input_shape", "output_shape"):
            mine, botos = getattr(op, part), getattr(their_op, part)
            assert (mine is None) == (botos is None)
            if mine is not None:
                _same(mine, botos, seen)
    for name in theirs.shape_names:
        assert ours.shape_for(name).metadata == theirs.shape_for(name).metadata


def test_the_newest_api_version_is_read_as_botocores_loader_picks_it():
    loader = Loader()
    for service in SERVICES:
        assert model_file(service).endswith(f"/{loader.determine_latest_version(service, 'service-2')}/service-2")
