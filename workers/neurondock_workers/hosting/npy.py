"""NPY bodies without numpy's per-call header parsing: the same arrays and bytes as ``np.load``/``np.save``.

``np.load`` parses every header with ``ast.literal_eval`` and ``np.save`` formats one per call; for a
small tensor that is most of the decode and encode time, and on the tiny MLP a request decoded by
``np.load`` also ran the model 60 µs slower than one decoded here (docs/measured.md, "Issue 14").
A request stream repeats a handful of headers, so each distinct header is parsed once by numpy itself
and remembered; anything this fast path does not cover (object or structured dtypes, Fortran order,
format 3.0, a short body, a header numpy refuses) goes to numpy, which answers or raises as before.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

_MAGIC = b"\x93NUMPY"
# Distinct headers remembered; past that the cache starts again (no caller can grow it without bound).
_CACHE_SIZE = 256
# Everything before the data (magic, version, length, header) → (shape, dtype, elements, data bytes).
_decoded: dict[bytes, tuple[tuple[int, ...], np.dtype[Any], int, int]] = {}
# (dtype, shape) → the header ``np.save`` writes for such an array.
_encoded: dict[tuple[str, tuple[int, ...]], bytes] = {}


def _spec(raw: bytes, offset: int) -> tuple[tuple[int, ...], np.dtype[Any], int, int] | None:
    """Parse the header ending at ``offset`` with numpy's own reader; None when ``np.load`` should have it."""
    stream = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(stream)
        reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if reader is None:
            return None
        shape, fortran, dtype = reader(stream)
    except (ValueError, SyntaxError, TypeError):
        return None
    if fortran or dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or stream.tell() != offset:
        return None
    count = 1
    for n in shape:
        count *= n
    if len(_decoded) >= _CACHE_SIZE:
        _decoded.clear()
    spec = _decoded[raw[:offset]] = (tuple(shape), dtype, count, count * dtype.itemsize)
    return spec


def load(raw: bytes) -> np.ndarray[Any, Any]:
    """Decode an NPY body into a new writable array, refusing pickled objects (``allow_pickle=False``).

    Raises:
        ValueError: not an NPY body, or one numpy cannot load without pickle.
    """
    if raw[:6] == _MAGIC and len(raw) >= 10:
        # Magic, version, header length (2 bytes in format 1.x, 4 after), then the header itself.
        offset = 10 + (raw[8] | raw[9] << 8) if raw[6] == 1 else 12 + int.from_bytes(raw[8:12], "little")
        spec = _decoded.get(raw[:offset]) or _spec(raw, offset)
        if spec is not None and len(raw) >= offset + spec[3]:
            shape, dtype, count, _ = spec
            # A copy: np.frombuffer over bytes is read-only, and a model may write into its input.
            return np.frombuffer(raw, dtype, count, offset).reshape(shape).copy()
    return np.load(io.BytesIO(raw), allow_pickle=False)


def save(array: np.ndarray[Any, Any]) -> bytes:
    """Encode an array exactly as ``np.save(..., allow_pickle=False)`` would."""
    dtype = array.dtype
    if array.flags.c_contiguous and not dtype.hasobject and dtype.fields is None and dtype.subdtype is None:
        key = (dtype.str, array.shape)
        header = _encoded.get(key)
        if header is None:
            header = _header(array)
            if len(_encoded) >= _CACHE_SIZE:
                _encoded.clear()
            _encoded[key] = header
        return header + array.tobytes()
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _header(array: np.ndarray[Any, Any]) -> bytes:
    """The header ``np.save`` writes before this array's data."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    written = buffer.getvalue()
    return written[: len(written) - array.nbytes]
