"""The NPY fast path gives exactly what np.load and np.save give, and leaves the rest to numpy."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest

from neurondock_workers.hosting import npy


def saved(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


ARRAYS = [
    np.arange(16, dtype=np.float32).reshape(1, 16),
    np.arange(24, dtype=np.int64).reshape(2, 3, 4),
    np.array(3.5, dtype=np.float64),
    np.zeros((0, 5), dtype=np.uint8),
    np.array([True, False]),
    np.arange(6, dtype=">i4").reshape(2, 3),
    np.array(["ab", "cde"]),
    np.zeros((1,) * 30 + (2,), dtype=np.float16),
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype.str}{a.shape}")
def test_round_trips_like_numpy(array):
    body = saved(array)
    for _ in range(2):  # the second time from the remembered header
        loaded = npy.load(body)
        assert loaded.dtype == array.dtype and loaded.shape == array.shape
        assert np.array_equal(loaded, array)
        assert loaded.flags.writeable and loaded.flags.c_contiguous
        assert npy.save(array) == body


def test_a_loaded_array_is_its_own_copy():
    body = saved(np.ones((2, 2), dtype=np.float32))
    first = npy.load(body)
    first[0, 0] = 7
    assert npy.load(body)[0, 0] == 1


def test_format_2_headers_and_trailing_bytes_load_as_numpy_does():
    array = np.arange(4, dtype=np.float32)
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, version=(2, 0))
    body = buffer.getvalue()
    assert np.array_equal(npy.load(body), array)
    assert np.array_equal(npy.load(body + b"extra"), np.load(io.BytesIO(body + b"extra")))


def test_fortran_order_loads_and_saves_as_numpy_does():
    array = np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3))
    body = saved(array)
    assert np.array_equal(npy.load(body), array)
    assert npy.save(array) == body


@pytest.mark.parametrize(
    "body",
    [
        saved(np.arange(8, dtype=np.float32))[:-4],  # short data
        b"\x93NUMPY\x01\x00\x10\x00{'descr': bogus}",  # a header numpy refuses
        b"not npy at all",
        b"\x93NUMPY",
    ],
)
def test_what_numpy_refuses_is_refused_with_numpys_error(body):
    with pytest.raises(ValueError) as ours:
        npy.load(body)
    with pytest.raises(ValueError) as theirs:
        np.load(io.BytesIO(body), allow_pickle=False)
    # (less the addresses of objects named in the message)
    assert re.sub("0x[0-9a-f]+", "", str(ours.value)) == re.sub("0x[0-9a-f]+", "", str(theirs.value))


def test_object_arrays_are_never_unpickled():
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        npy.load(buffer.getvalue())
    with pytest.raises(ValueError, match="allow_pickle"):
        npy.save(np.array([{"a": 1}], dtype=object))


def test_structured_dtypes_keep_their_fields():
    array = np.zeros(3, dtype=[("x", "<f4"), ("y", "<i2")])
    body = saved(array)
    assert npy.load(body).dtype == array.dtype
    assert npy.save(array) == body
