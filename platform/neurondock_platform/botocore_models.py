"""botocore's service models as this platform loads them: without their documentation strings.

A service model's prose is most of its size: SageMaker's service-2.json parses into ~11.6 MB of
Python objects, ~4.7 MB without it (docs/measured.md), and every process that validates requests or
builds an S3 client keeps its models for good. Nothing here reads the prose: botocore only renders
it into a client method's docstring when someone asks for one. The keys stay, with an empty string:
botocore indexes some of them (a client context parameter's ``documentation``). Endpoint rule sets
are left as they are.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Collection, Iterable
from typing import Any

_OPENERS = ((".json", open), (".json.gz", gzip.open))


def _blank_documentation(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Only a string is prose: a member that happens to be called "documentation" is a dict.
    return {k: "" if k == "documentation" and isinstance(v, str) else v for k, v in pairs}


def _endpoints_of(data: dict[str, Any], services: Collection[str]) -> dict[str, Any]:
    """``endpoints.json`` with only ``services`` in each partition, its other partition data as it is."""
    for partition in data["partitions"]:
        partition["services"] = {name: value for name, value in partition["services"].items() if name in services}
    # Parsed afresh from its own text, once the whole file's objects are gone: the part kept would
    # otherwise stay spread over the pages the whole file took (docs/measured.md).
    text = json.dumps(data)
    del data
    return dict(json.loads(text))


class UndocumentedFiles:
    """A botocore file loader (``exists``, ``load_file``) that blanks a service model's documentation.

    With ``endpoint_services``, botocore's endpoint table (``endpoints.json``, ~4 MB parsed) keeps only
    those services: for a loader whose clients are all of those services.
    """

    def __init__(self, endpoint_services: Collection[str] | None = None) -> None:
        self.endpoint_services = endpoint_services

    def exists(self, file_path: str) -> bool:
        """Tell whether the model file exists, as ``.json`` or ``.json.gz``."""
        return any(os.path.isfile(file_path + ext) for ext, _ in _OPENERS)

    def load_file(self, file_path: str) -> Any:
        """Parse the file at ``file_path`` (without its extension), or return None when there is none."""
        hook = _blank_documentation if os.path.basename(file_path).startswith("service-") else None
        for ext, opener in _OPENERS:
            if os.path.isfile(file_path + ext):
                with opener(file_path + ext, "rb") as fp:
                    data = json.loads(fp.read().decode("utf-8"), object_pairs_hook=hook)
                if self.endpoint_services is not None and os.path.basename(file_path) == "endpoints":
                    return _endpoints_of(data, self.endpoint_services)
                return data
        return None


def only_operations(model: dict[str, Any], operations: Iterable[str], shapes: Iterable[str] = ()) -> dict[str, Any]:
    """A service model with only ``operations`` and the shapes they (and ``shapes``) reach.

    SageMaker's model describes ~450 operations in ~3,400 shapes; the ~26 neurondock serves reach ~340
    of them, and the rest is ~4.5 MB an API process would keep for good (docs/measured.md).
    """
    kept = {name: model["operations"][name] for name in operations}
    todo = list(shapes)
    for operation in kept.values():
        todo += [operation[part]["shape"] for part in ("input", "output") if part in operation]
        todo += [error["shape"] for error in operation.get("errors", ())]
    reached: dict[str, Any] = {}
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        shape = reached[name] = model["shapes"][name]
        todo += [shape[part]["shape"] for part in ("member", "key", "value") if part in shape]
        todo += [member["shape"] for member in shape.get("members", {}).values()]
    return {**model, "operations": kept, "shapes": reached}
