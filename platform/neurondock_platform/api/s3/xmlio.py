"""Build and parse S3's rest-xml bodies."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from neurondock_platform.services.objects import MalformedXML

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'


def root(tag: str, *, namespace: bool = True) -> ET.Element:
    """Return a response's root element (in S3's namespace, as S3 sends them)."""
    element = ET.Element(tag)
    if namespace:
        element.set("xmlns", S3_NS)
    return element


def sub(parent: ET.Element, tag: str, text: Any = None) -> ET.Element:
    """Append a child element with optional text (booleans render as true/false)."""
    child = ET.SubElement(parent, tag)
    if isinstance(text, bool):
        child.text = "true" if text else "false"
    elif text is not None:
        # Characters XML 1.0 cannot carry at all (keys may hold them) would make the document unparsable.
        child.text = _INVALID_XML.sub("\ufffd", str(text))
    return child


def to_bytes(element: ET.Element) -> bytes:
    """Serialise with the XML declaration S3 sends."""
    return _DECLARATION + ET.tostring(element, encoding="unicode").encode("utf-8")


def parse(data: bytes, expected_root: str) -> ET.Element:
    """Parse a request body, dropping namespaces; anything unexpected is ``MalformedXML``."""
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise MalformedXML()
    try:
        element = ET.fromstring(data)
    except ET.ParseError as exc:
        raise MalformedXML() from exc
    for node in element.iter():
        if isinstance(node.tag, str):
            node.tag = node.tag.rpartition("}")[2]
    if element.tag != expected_root:
        raise MalformedXML()
    return element


def text(element: ET.Element, tag: str) -> str | None:
    """Return a direct child's text ("" for an empty element), or None when absent."""
    child = element.find(tag)
    if child is None:
        return None
    return child.text or ""
