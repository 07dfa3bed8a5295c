"""An AWS service's model as botocore ships it, read without botocore's model code.

The API validates requests and speaks the Query protocol with a service's shapes (its members, their
types and constraints), which is all it reads of ``botocore.model``; importing that module brings
botocore's HTTP, auth and date code with it (urllib3, dateutil, awscrt: ~2 MB RSS the API kept for
good, docs/measured.md). These classes answer the same attribute names from the same JSON:
``ServiceModel.operation_model(name).input_shape.members`` and so on, a shape's ``metadata`` and
``serialization`` built exactly as botocore builds them (a member reference's own traits, such as its
``locationName``, laid over the shape it names).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

from neurondock_platform.botocore_models import UndocumentedFiles

# The keys botocore moves into a shape's ``serialization`` (``locationName`` renamed ``name``) and its
# ``metadata`` (botocore.model.Shape.SERIALIZED_ATTRS and METADATA_ATTRS).
_SERIALIZED = (
    "locationName",
    "queryName",
    "flattened",
    "location",
    "payload",
    "streaming",
    "timestampFormat",
    "xmlNamespace",
    "resultWrapper",
    "xmlAttribute",
    "eventstream",
    "event",
    "eventheader",
    "eventpayload",
    "jsonvalue",
    "hostLabel",
)
_METADATA = (
    "required",
    "min",
    "max",
    "pattern",
    "sensitive",
    "enum",
    "idempotencyToken",
    "error",
    "exception",
    "endpointdiscoveryid",
    "retryable",
    "document",
    "union",
    "contextParam",
    "clientContextParams",
    "requiresLength",
)


class Shape:
    """One shape of a service model, with what a member reference adds to it."""

    def __init__(self, name: str, model: Mapping[str, Any], shapes: Mapping[str, Any]) -> None:
        self.name = name
        self.type_name: str = model["type"]
        self.documentation: str = model.get("documentation", "")
        self._model = model
        self._shapes = shapes

    def _resolve(self, ref: Mapping[str, Any]) -> Shape:
        return resolve(ref, self._shapes)

    @functools.cached_property
    def serialization(self) -> dict[str, Any]:
        """How the shape goes on the wire: ``name`` (botocore's ``locationName``), ``flattened``, ..."""
        out = {key: self._model[key] for key in _SERIALIZED if key in self._model}
        if "locationName" in out:
            out["name"] = out.pop("locationName")
        return out

    @functools.cached_property
    def metadata(self) -> dict[str, Any]:
        """Its constraints: ``min``, ``max``, ``pattern``, ``enum``, ``required``, ..."""
        return {key: self._model[key] for key in _METADATA if key in self._model}

    @property
    def required_members(self) -> list[str]:
        """The members a structure requires."""
        return list(self.metadata.get("required", []))

    @functools.cached_property
    def members(self) -> dict[str, Shape]:
        """A structure's members by name, in the model's order."""
        return {name: self._resolve(ref) for name, ref in self._model.get("members", {}).items()}

    @functools.cached_property
    def member(self) -> Shape:
        """A list's item shape."""
        return self._resolve(self._model["member"])

    @functools.cached_property
    def key(self) -> Shape:
        """A map's key shape."""
        return self._resolve(self._model["key"])

    @functools.cached_property
    def value(self) -> Shape:
        """A map's value shape."""
        return self._resolve(self._model["value"])

    @property
    def enum(self) -> list[str]:
        """A string's allowed values (empty when any string goes)."""
        return list(self.metadata.get("enum", []))

    def __repr__(self) -> str:
        return f"<Shape({self.name})>"


def resolve(ref: Mapping[str, Any], shapes: Mapping[str, Any]) -> Shape:
    """The shape a reference (``{"shape": name, **traits}``) names, its traits laid over the shape's own."""
    name = ref["shape"]
    model = shapes[name]
    if len(ref) > 1:
        model = {**model, **{k: v for k, v in ref.items() if k != "shape"}}
    return Shape(name, model, shapes)


class OperationModel:
    """One operation: its input and output shapes."""

    def __init__(self, name: str, model: Mapping[str, Any], shapes: Mapping[str, Any]) -> None:
        self.name = name
        self.documentation: str = model.get("documentation", "")
        self._model = model
        self._shapes = shapes

    @functools.cached_property
    def input_shape(self) -> Shape | None:
        """The request's shape, or None for an operation that takes no input."""
        return resolve(self._model["input"], self._shapes) if "input" in self._model else None

    @functools.cached_property
    def output_shape(self) -> Shape | None:
        """The answer's shape, or None for an operation that returns none."""
        return resolve(self._model["output"], self._shapes) if "output" in self._model else None


class ServiceModel:
    """A service's operations and shapes (the parsed ``service-2.json``)."""

    def __init__(self, model: Mapping[str, Any], service_name: str) -> None:
        self.service_name = service_name
        self.metadata: Mapping[str, Any] = model.get("metadata", {})
        self._operations: Mapping[str, Any] = model["operations"]
        self._shapes: Mapping[str, Any] = model["shapes"]
        self._operation_models: dict[str, OperationModel] = {}

    @property
    def operation_names(self) -> list[str]:
        """Every operation's name."""
        return list(self._operations)

    @property
    def shape_names(self) -> list[str]:
        """Every shape's name."""
        return list(self._shapes)

    def operation_model(self, name: str) -> OperationModel:
        """The operation ``name`` (KeyError for one the model lacks)."""
        found = self._operation_models.get(name)
        if found is None:
            found = self._operation_models[name] = OperationModel(name, self._operations[name], self._shapes)
        return found

    def shape_for(self, name: str) -> Shape:
        """The shape ``name``."""
        return Shape(name, self._shapes[name], self._shapes)


def model_file(service: str) -> str:
    """The path, without its extension, of the newest ``service-2`` model botocore ships for ``service``.

    What botocore's loader picks for a client of no pinned API version, from the installed package
    (a user's ``~/.aws/models`` has no say in what a server accepts).
    """
    import botocore  # the package alone: its __init__ imports no HTTP or auth code

    root = os.path.join(os.path.dirname(botocore.__file__ or ""), "data", service)
    files = UndocumentedFiles()
    found = (os.path.join(root, v, "service-2") for v in sorted(os.listdir(root), reverse=True))
    return next(path for path in found if files.exists(path))
