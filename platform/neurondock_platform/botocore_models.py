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
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any

_OPENERS = ((".json", open), (".json.gz", gzip.open))
_SPACE = re.compile(r"[ \t\n\r]*")


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
        text = _read(file_path)
        if text is None:
            return None
        data = json.loads(text, object_pairs_hook=hook)
        if self.endpoint_services is not None and os.path.basename(file_path) == "endpoints":
            return _endpoints_of(data, self.endpoint_services)
        return data


def _read(file_path: str) -> str | None:
    for ext, opener in _OPENERS:
        if os.path.isfile(file_path + ext):
            with opener(file_path + ext, "rb") as fp:
                return fp.read().decode("utf-8")
    return None


def _space(text: str, at: int) -> int:
    return _SPACE.match(text, at).end()  # type: ignore[union-attr]


def _object_at(text: str, at: int, value: Callable[[str, int], tuple[Any, int]]) -> tuple[dict[str, Any], int]:
    """The JSON object whose ``{`` is at ``at``: each member's ``value(name, start)``, and the index past it.

    ``value`` is given where the member's value starts and returns what to keep of it and where it ends.
    """
    members: dict[str, Any] = {}
    at = _space(text, at + 1)
    while text[at] != "}":
        name, at = scanstring(text, at + 1)
        members[name], at = value(name, _space(text, _space(text, at) + 1))  # past the ':'
        at = _space(text, at)
        if text[at] == ",":
            at = _space(text, at + 1)
    return members, at + 1


class _Parsed(Mapping[str, Any]):
    """A JSON object's members, each parsed from the text when asked for (anew each time)."""

    def __init__(self, text: str, starts: dict[str, int], decode: Callable[[str, int], tuple[Any, int]]) -> None:
        self._text, self._starts, self._decode = text, starts, decode

    def __getitem__(self, name: str) -> Any:
        return self._decode(self._text, self._starts[name])[0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._starts)

    def __len__(self) -> int:
        return len(self._starts)


def load_operations(file_path: str, operations: Iterable[str], shapes: Iterable[str] = ()) -> dict[str, Any]:
    """The service model at ``file_path`` with only ``operations`` and the shapes they reach (``only_operations``).

    Read without ever building the whole model: each operation and shape is parsed on its own to find
    where it ends and dropped at once, and only those kept are parsed for good. SageMaker's model built
    whole and then pruned left 2.4-3.4 MB more resident in an interpreter holding the API's modules, the
    kept part spread over the pages the whole had taken (docs/measured.md).
    """
    text = _read(file_path)
    if text is None:
        raise FileNotFoundError(file_path)
    decode = json.JSONDecoder(object_pairs_hook=_blank_documentation).raw_decode
    skip = json.JSONDecoder().raw_decode

    def start_and_end(_name: str, start: int) -> tuple[int, int]:
        return start, skip(text, start)[1]

    def top_level(name: str, start: int) -> tuple[Any, int]:
        if name not in ("operations", "shapes"):
            return decode(text, start)
        starts, end = _object_at(text, start, start_and_end)
        return _Parsed(text, starts, decode), end

    model, _end = _object_at(text, _space(text, 0), top_level)
    return only_operations(_blank_documentation(list(model.items())), operations, shapes)


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
