"""The AWS Query protocol, driven by botocore's shapes: form bodies in, XML documents out.

Requests are ``application/x-www-form-urlencoded`` with ``Action``, ``Version`` and the input's
members flattened into keys (``Dimensions.member.1.Name``, ``Map.entry.1.key``); answers are
``<{Action}Response xmlns=…><{Action}Result>…</{Action}Result><ResponseMetadata>…`` and errors
``<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/></ErrorResponse>``
(docs/cloudwatch.md, "Protocols").
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

_MISSING = object()


class QueryParseError(ValueError):
    """A form value that does not fit its member's type."""


def parse_form(body: bytes) -> dict[str, str]:
    """Decode a form body (the last value wins for a repeated key, as AWS does)."""
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
    except UnicodeDecodeError as exc:
        raise QueryParseError("The request body is not UTF-8 form data.") from exc


def from_form(shape: Any, form: Mapping[str, str]) -> dict[str, Any]:
    """Rebuild an operation's input (the shape's members as botocore would send them in JSON)."""
    if shape is None:
        return {}
    value = _value(shape, "", form)
    return value if isinstance(value, dict) else {}


def _name(member_name: str, member: Any) -> str:
    return str(member.serialization.get("name", member_name))


def _value(shape: Any, prefix: str, form: Mapping[str, str]) -> Any:
    kind = shape.type_name
    if kind == "structure":
        out: dict[str, Any] = {}
        for member_name, member in shape.members.items():
            key = _name(member_name, member)
            got = _value(member, f"{prefix}.{key}" if prefix else key, form)
            if got is not _MISSING:
                out[member_name] = got
        return out if out or not prefix else _MISSING
    if kind == "list":
        if form.get(prefix) == "":
            return []
        flattened = shape.serialization.get("flattened", False)
        item_name = "" if flattened else str(shape.member.serialization.get("name", "member"))
        items = []
        index = 1
        while True:
            key = f"{prefix}.{index}" if flattened else f"{prefix}.{item_name}.{index}"
            got = _value(shape.member, key, form)
            if got is _MISSING:
                break
            items.append(got)
            index += 1
        return items if items else _MISSING
    if kind == "map":
        entries: dict[str, Any] = {}
        index = 1
        while f"{prefix}.entry.{index}.key" in form:
            got = _value(shape.value, f"{prefix}.entry.{index}.value", form)
            entries[form[f"{prefix}.entry.{index}.key"]] = None if got is _MISSING else got
            index += 1
        return entries if entries else _MISSING
    if prefix not in form:
        return _MISSING
    return _scalar(kind, form[prefix], prefix)


def _scalar(kind: str, text: str, key: str) -> Any:
    try:
        if kind in ("integer", "long"):
            return int(text)
        if kind in ("float", "double"):
            number = float(text)
            if not math.isfinite(number):
                raise ValueError(text)
            return number
        if kind == "boolean":
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
    except ValueError as exc:
        raise QueryParseError(f"The value {text} for parameter {key} is not a valid {kind}.") from exc
    return text  # strings, and timestamps (ISO 8601), which the operation parses


def timestamp(when: dt.datetime) -> str:
    """ISO 8601 with milliseconds, as AWS's Query answers carry timestamps."""
    when = when.astimezone(dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def to_xml(shape: Any, value: Any, name: str) -> str:
    """Serialise ``value`` of ``shape`` as the element ``name``."""
    kind = shape.type_name
    if kind == "structure":
        inner = "".join(
            to_xml(member, value[member_name], _name(member_name, member))
            for member_name, member in shape.members.items()
            if isinstance(value, dict) and value.get(member_name) is not None
        )
        return f"<{name}>{inner}</{name}>"
    if kind == "list":
        item = str(shape.member.serialization.get("name", "member"))
        return f"<{name}>" + "".join(to_xml(shape.member, v, item) for v in value) + f"</{name}>"
    if kind == "map":
        inner = "".join(
            f"<entry><key>{escape(str(k))}</key>{to_xml(shape.value, v, 'value')}</entry>" for k, v in value.items()
        )
        return f"<{name}>{inner}</{name}>"
    if kind == "timestamp":
        text = timestamp(value) if isinstance(value, dt.datetime) else str(value)
    elif kind == "boolean":
        text = "true" if value else "false"
    elif kind in ("float", "double"):
        text = repr(float(value))
    else:
        text = escape(str(value))
    return f"<{name}>{text}</{name}>"


def response(action: str, namespace: str, output_shape: Any, result: dict[str, Any], request_id: str) -> str:
    """The document answering one Query request."""
    body = ""
    if output_shape is not None:
        body = to_xml(output_shape, result, f"{action}Result")
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<{action}Response xmlns="{namespace}">{body}'
        f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{action}Response>"
    )


def error(namespace: str, code: str, message: str, request_id: str, *, sender: bool = True) -> str:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse xmlns="{namespace}"><Error>'
        f"<Type>{'Sender' if sender else 'Receiver'}</Type><Code>{escape(code)}</Code>"
        f"<Message>{escape(message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
    )
