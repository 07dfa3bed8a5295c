"""Server-side validation of SageMaker requests, with AWS's messages.

botocore checks only ``required``, types and ``min`` on the client (docs/sagemaker-api.md), so the server
walks the request against botocore's own input shape (lengths, patterns, enums, ranges, list and map
sizes, required members, JSON types) and reports every violation the way AWS does::

    1 validation error detected: Value 'bad_name!' at 'endpointName' failed to satisfy constraint:
    Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}

Rules botocore's model cannot express (unique variant names, reserved tag prefixes, instance types
neurondock runs) are small helpers here that raise the same way.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from neurondock_platform import catalog
from neurondock_platform.errors import ValidationException

MAX_RENDERED_VALUE = 256
# A string this far past its max length is not pattern-checked (bounds regex work on huge input).
_PATTERN_CHECK_LIMIT = 16384
RESERVED_TAG_PREFIX = "aws:"
MAX_TAGS_PER_RESOURCE = 50


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def camel(name: str) -> str:
    """Return a member name as AWS's messages spell it (``ProductionVariants`` → ``productionVariants``)."""
    return name[:1].lower() + name[1:]


def join_path(path: str, member: str) -> str:
    """Return the path of a structure member below ``path``."""
    return f"{path}.{camel(member)}" if path else camel(member)


def item_path(path: str, index: int) -> str:
    """Return the path of the ``index``-th (0-based) list element, AWS style: ``tags.1.member``."""
    return f"{path}.{index + 1}.member"


def render_value(value: Any) -> str:
    """Render a value the way AWS quotes it in a constraint message (long values are cut)."""
    if value is MISSING or value is None:
        return "null"
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
    if len(text) > MAX_RENDERED_VALUE:
        text = text[:MAX_RENDERED_VALUE] + "..."
    return f"'{text}'"


def violation(value: Any, path: str, constraint: str) -> str:
    """Return one AWS-style constraint violation."""
    return f"Value {render_value(value)} at '{path}' failed to satisfy constraint: {constraint}"


def format_errors(messages: Iterable[str]) -> str:
    """Join violations into AWS's ``N validation error(s) detected: …`` message."""
    items = list(messages)
    plural = "s" if len(items) != 1 else ""
    return f"{len(items)} validation error{plural} detected: " + "; ".join(items)


def invalid(value: Any, path: str, constraint: str) -> ValidationException:
    """Return a ValidationException for a single violated constraint."""
    return ValidationException(format_errors([violation(value, path, constraint)]))


@dataclass
class Errors:
    """Collects violations so a request reports all of them at once, as AWS does."""

    messages: list[str] = field(default_factory=list)

    def add(self, value: Any, path: str, constraint: str) -> None:
        self.messages.append(violation(value, path, constraint))

    def raise_if_any(self) -> None:
        if self.messages:
            raise ValidationException(format_errors(self.messages))


# --- patterns ------------------------------------------------------------------------------------------

_UNICODE_CLASS_RE = re.compile(r"^\(?\[(?P<body>.*)\]\*\)?$")
_CATEGORY_RE = re.compile(r"\\p\{(?P<cat>[A-Z])\}")
# Java spells "any supplementary character" as a UTF-16 surrogate-pair range (Application Auto
# Scaling's XML-character patterns); Python's re needs the code point range instead.
_SURROGATE_PAIR_RANGE = "\\uD800\\uDC00-\\uDBFF\\uDFFF"


@functools.cache
def compile_pattern(pattern: str) -> Callable[[str], bool]:
    """Return a full-match test for one of botocore's (Java-flavoured) patterns."""
    if "\\p{" in pattern:
        return _unicode_class_matcher(pattern)
    regex = re.compile(pattern.replace(_SURROGATE_PAIR_RANGE, "\\U00010000-\\U0010FFFF"), re.ASCII | re.DOTALL)
    return lambda value: regex.fullmatch(value) is not None


def _unicode_class_matcher(pattern: str) -> Callable[[str], bool]:
    # Python's re has no \p{..}; the only such patterns (TagKey/TagValue) are one repeated char class.
    m = _UNICODE_CLASS_RE.match(pattern)
    if m is None:
        return lambda value: True
    body = m["body"]
    categories = frozenset(c["cat"] for c in _CATEGORY_RE.finditer(body))
    literals = frozenset(re.sub(r"\\(.)", r"\1", _CATEGORY_RE.sub("", body)))

    def matches(value: str) -> bool:
        return all(ch in literals or unicodedata.category(ch)[0] in categories for ch in value)

    return matches


def display_pattern(pattern: str) -> str:
    """Return a pattern as AWS prints it (anchored with ``^``)."""
    return pattern if pattern.startswith("^") else "^" + pattern


# --- shape walking -------------------------------------------------------------------------------------


def validate_input(
    operation: str,
    params: Mapping[str, Any],
    *,
    service: str = "sagemaker",
    error: Callable[[str], Exception] = ValidationException,
) -> None:
    """Check a request against the operation's input shape in botocore's model of ``service``.

    Raises ``error`` (SageMaker's ValidationException by default) listing every violation.
    """
    shape = catalog.service_model(service).operation_model(operation).input_shape
    errors = Errors()
    if shape is not None:
        check_shape(shape, params, "", errors)
    if errors.messages:
        raise error(format_errors(errors.messages))


def check_shape(shape: Any, value: Any, path: str, errors: Errors) -> None:
    """Check ``value`` against a botocore shape, adding every violation to ``errors``."""
    checker = _CHECKERS.get(shape.type_name)
    if checker is not None:
        checker(shape, value, path, errors)


def _check_structure(shape: Any, value: Any, path: str, errors: Errors) -> None:
    if not isinstance(value, dict):
        errors.add(value, path, "Member must be of type structure")
        return
    for name in shape.required_members:
        if value.get(name) is None:
            errors.add(MISSING, join_path(path, name), "Member must not be null")
    for name, member in shape.members.items():
        item = value.get(name)
        if item is not None:
            check_shape(member, item, join_path(path, name), errors)


def _check_list(shape: Any, value: Any, path: str, errors: Errors) -> None:
    if not isinstance(value, list):
        errors.add(value, path, "Member must be of type list")
        return
    _check_length(shape, value, len(value), path, errors)
    for index, item in enumerate(value):
        if item is None:
            errors.add(MISSING, item_path(path, index), "Member must not be null")
        else:
            check_shape(shape.member, item, item_path(path, index), errors)


def _check_map(shape: Any, value: Any, path: str, errors: Errors) -> None:
    if not isinstance(value, dict):
        errors.add(value, path, "Member must be of type map")
        return
    _check_length(shape, value, len(value), path, errors)
    for key, item in value.items():
        key_errors, value_errors = Errors(), Errors()
        check_shape(shape.key, key, path, key_errors)
        if item is None:
            value_errors.add(MISSING, path, "Member must not be null")
        else:
            check_shape(shape.value, item, f"{path}.{key}", value_errors)
        if key_errors.messages:
            errors.add(key, path, "Map keys must satisfy constraint: [" + _constraints(key_errors) + "]")
        if value_errors.messages:
            if shape.value.type_name in ("structure", "list", "map"):
                errors.messages.extend(value_errors.messages)
            else:
                errors.add(item, path, "Map value must satisfy constraint: [" + _constraints(value_errors) + "]")


def _constraints(errors: Errors) -> str:
    return ", ".join(m.split("failed to satisfy constraint: ", 1)[-1] for m in errors.messages)


def _check_length(shape: Any, value: Any, length: int, path: str, errors: Errors) -> None:
    lo, hi = shape.metadata.get("min"), shape.metadata.get("max")
    if lo is not None and length < lo:
        errors.add(value, path, f"Member must have length greater than or equal to {lo}")
    if hi is not None and length > hi:
        errors.add(value, path, f"Member must have length less than or equal to {hi}")


def _check_string(shape: Any, value: Any, path: str, errors: Errors) -> None:
    if not isinstance(value, str):
        errors.add(value, path, "Member must be of type string")
        return
    _check_length(shape, value, len(value), path, errors)
    enum = shape.metadata.get("enum")
    if enum and value not in enum:
        errors.add(value, path, f"Member must satisfy enum value set: [{', '.join(enum)}]")
    pattern = shape.metadata.get("pattern")
    if pattern and len(value) <= _PATTERN_CHECK_LIMIT and not compile_pattern(pattern)(value):
        errors.add(value, path, f"Member must satisfy regular expression pattern: {display_pattern(pattern)}")


def _check_integer(shape: Any, value: Any, path: str, errors: Errors) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        errors.add(value, path, "Member must be of type integer")
        return
    _check_range(shape, value, path, errors)


def _check_float(shape: Any, value: Any, path: str, errors: Errors) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        errors.add(value, path, "Member must be of type number")
        return
    _check_range(shape, value, path, errors)


def _check_range(shape: Any, value: float, path: str, errors: Errors) -> None:
    lo, hi = shape.metadata.get("min"), shape.metadata.get("max")
    if lo is not None and value < lo:
        errors.add(value, path, f"Member must have value greater than or equal to {lo}")
    if hi is not None and value > hi:
        errors.add(value, path, f"Member must have value less than or equal to {hi}")


def _check_boolean(shape: Any, value: Any, path: str, errors: Errors) -> None:
    if not isinstance(value, bool):
        errors.add(value, path, "Member must be of type boolean")


def _check_timestamp(shape: Any, value: Any, path: str, errors: Errors) -> None:
    try:
        to_datetime(value)
    except (TypeError, ValueError, OverflowError, OSError):
        errors.add(value, path, "Member must be a timestamp (epoch seconds or ISO 8601)")


_CHECKERS: dict[str, Callable[[Any, Any, str, Errors], None]] = {
    "structure": _check_structure,
    "list": _check_list,
    "map": _check_map,
    "string": _check_string,
    "integer": _check_integer,
    "long": _check_integer,
    "float": _check_float,
    "double": _check_float,
    "boolean": _check_boolean,
    "timestamp": _check_timestamp,
}


def without_nulls(value: Any) -> Any:
    """Return a copy with null structure members dropped (botocore never sends them; AWS ignores them)."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def to_datetime(value: Any) -> dt.datetime:
    """Parse a request timestamp (epoch seconds, as boto3 sends, or ISO 8601) into aware UTC."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not a timestamp")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        return dt.datetime.fromtimestamp(value, dt.UTC)
    if isinstance(value, str):
        try:
            return to_datetime(float(value))
        except ValueError:
            parsed = dt.datetime.fromisoformat(value)
        return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)
    raise TypeError(f"{type(value).__name__} is not a timestamp")


# --- rules beyond the model ----------------------------------------------------------------------------


def check_tags(tags: list[dict[str, Any]], path: str = "tags") -> None:
    """Reject reserved ``aws:`` keys and a key given twice (shape limits are checked by validate_input)."""
    errors = Errors()
    seen: set[str] = set()
    for index, tag in enumerate(tags):
        key = tag["Key"]
        if key.lower().startswith(RESERVED_TAG_PREFIX):
            errors.add(
                key,
                join_path(item_path(path, index), "Key"),
                "Member must not start with the reserved prefix 'aws:'",
            )
        if key in seen:
            errors.add(key, join_path(item_path(path, index), "Key"), "Tag keys must be unique within a request")
        seen.add(key)
    errors.raise_if_any()


def check_unique_names(items: list[dict[str, Any]], member: str, path: str) -> None:
    """Reject a list whose elements repeat the same ``member`` (e.g. two variants named alike)."""
    errors = Errors()
    seen: set[str] = set()
    for index, item in enumerate(items):
        name = item[member]
        if name in seen:
            errors.add(name, join_path(item_path(path, index), member), f"{member} values must be unique")
        seen.add(name)
    errors.raise_if_any()


def check_instance_type(instance_type: str, path: str) -> None:
    """Reject an instance type that is valid on SageMaker but that neurondock does not run."""
    if catalog.is_supported(instance_type):
        return
    supported = ", ".join(catalog.SUPPORTED_INSTANCE_TYPES)
    if instance_type in catalog.all_instance_types():
        raise invalid(instance_type, path, f"Instance type is not supported by neurondock; supported: [{supported}]")
    raise invalid(
        instance_type, path, f"Member must satisfy enum value set: [{', '.join(catalog.all_instance_types())}]"
    )
