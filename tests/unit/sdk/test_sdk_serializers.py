"""Serializers and deserializers: SageMaker's CONTENT_TYPE / ACCEPT values and encodings."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from neurondock import deserializers as d
from neurondock import serializers as s


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("serializer", "content_type"),
    [
        (s.JSONSerializer(), "application/json"),
        (s.NumpySerializer(), "application/x-npy"),
        (s.CSVSerializer(), "text/csv"),
        (s.IdentitySerializer(), "application/octet-stream"),
        (s.StringSerializer(), "text/plain"),
        (s.TorchTensorSerializer(), "tensor/pt"),
    ],
)
def test_serializer_content_types(serializer: s.BaseSerializer, content_type: str) -> None:
    assert content_type == serializer.CONTENT_TYPE


@pytest.mark.parametrize(
    ("deserializer", "accept"),
    [
        (d.BytesDeserializer(), ("*/*",)),
        (d.StringDeserializer(), ("application/json",)),
        (d.JSONDeserializer(), ("application/json",)),
        (d.NumpyDeserializer(), ("application/x-npy",)),
        (d.TorchTensorDeserializer(), ("tensor/pt",)),
        (
            d.NumpyDeserializer(accept=("application/x-npy", "application/json")),
            ("application/x-npy", "application/json"),
        ),
    ],
)
def test_deserializer_accepts(deserializer: d.BaseDeserializer, accept: tuple[str, ...]) -> None:
    assert accept == deserializer.ACCEPT


def test_content_type_must_be_a_string() -> None:
    with pytest.raises(ValueError, match="content_type"):
        s.JSONSerializer(content_type=None)  # type: ignore[arg-type]


def test_json_serializer_converts_arrays_tensors_and_reads_files() -> None:
    serializer = s.JSONSerializer()
    assert json.loads(serializer.serialize(np.array([[1, 2], [3, 4]]))) == [[1, 2], [3, 4]]
    assert json.loads(serializer.serialize({"x": np.array([1.5]), "y": 2})) == {"x": [1.5], "y": 2}
    assert json.loads(serializer.serialize(torch.tensor([1, 2]))) == [1, 2]
    assert serializer.serialize(io.BytesIO(b'{"a": 1}')) == b'{"a": 1}'
    assert serializer.serialize("text") == '"text"'


def test_numpy_serializer_round_trips_and_rejects_empty() -> None:
    serializer = s.NumpySerializer()
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(np.load(io.BytesIO(serializer.serialize(array))), array)
    as_list = np.load(io.BytesIO(s.NumpySerializer(dtype="float16").serialize([1, 2])))
    assert as_list.dtype == np.float16
    from_tensor = np.load(io.BytesIO(serializer.serialize(torch.ones(2, 2))))
    assert from_tensor.shape == (2, 2)
    assert serializer.serialize(io.BytesIO(b"npy")) == b"npy"
    empties: tuple[object, ...] = (np.array([]), [])
    for empty in empties:
        with pytest.raises(ValueError, match="empty"):
            serializer.serialize(empty)


def test_csv_serializer_rows_and_errors() -> None:
    serializer = s.CSVSerializer()
    assert serializer.serialize([1, 2, 3]) == "1,2,3"
    assert serializer.serialize([[1, 2], [3, 4]]) == "1,2\n3,4"
    assert serializer.serialize(np.array([[1, 2], [3, 4]])) == "1,2\n3,4"
    assert serializer.serialize("1,2") == "1,2"
    assert serializer.serialize(io.StringIO("a,b")) == "a,b"
    with pytest.raises(ValueError, match="empty"):
        serializer.serialize([])
    with pytest.raises(ValueError, match="Unable to handle"):
        serializer.serialize([[1], 2])


def test_identity_string_and_tensor_serializers() -> None:
    assert s.IdentitySerializer().serialize(b"\x00raw") == b"\x00raw"
    assert s.StringSerializer().serialize("hello") == "hello"
    with pytest.raises(ValueError):
        s.StringSerializer().serialize(b"bytes")
    tensor = torch.arange(4, dtype=torch.float32)
    assert np.array_equal(np.load(io.BytesIO(s.TorchTensorSerializer().serialize(tensor))), tensor.numpy())
    with pytest.raises(ValueError, match=r"not a torch\.Tensor"):
        s.TorchTensorSerializer().serialize([1, 2])


class _Tracked(io.BytesIO):
    closed_by_deserializer = False

    def close(self) -> None:
        self.closed_by_deserializer = True
        super().close()


def test_simple_deserializers_read_and_close_the_stream() -> None:
    stream = _Tracked(b"raw")
    assert d.BytesDeserializer().deserialize(stream, "application/octet-stream") == b"raw"
    assert stream.closed_by_deserializer
    assert d.StringDeserializer().deserialize(io.BytesIO("héllo".encode()), "text/plain") == "héllo"
    assert d.JSONDeserializer().deserialize(io.BytesIO(b'{"p": [0.9]}'), "application/json") == {"p": [0.9]}


def test_numpy_deserializer_decodes_by_response_content_type() -> None:
    deserializer = d.NumpyDeserializer()
    array = np.arange(4, dtype=np.int64)
    assert np.array_equal(deserializer.deserialize(io.BytesIO(_npy(array)), "application/x-npy"), array)
    assert np.array_equal(
        deserializer.deserialize(io.BytesIO(b"[[1, 2]]"), "application/json; charset=utf-8"), [[1, 2]]
    )
    assert np.array_equal(deserializer.deserialize(io.BytesIO(b"1,2\n3,4"), "text/csv"), [[1, 2], [3, 4]])
    npz = io.BytesIO()
    np.savez(npz, a=array)
    assert np.array_equal(deserializer.deserialize(io.BytesIO(npz.getvalue()), "application/x-npz")["a"], array)
    with pytest.raises(ValueError, match="cannot read content type text/html"):
        deserializer.deserialize(io.BytesIO(b"<html>"), "text/html")


def test_numpy_deserializer_refuses_pickles_unless_allowed() -> None:
    pickled = _npy(np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle=True"):
        d.NumpyDeserializer().deserialize(io.BytesIO(pickled), "application/x-npy")
    assert d.NumpyDeserializer(allow_pickle=True).deserialize(io.BytesIO(pickled), "application/x-npy")[0] == {"a": 1}


def test_torch_tensor_deserializer() -> None:
    tensor = d.TorchTensorDeserializer().deserialize(io.BytesIO(_npy(np.ones((2, 3), np.float32))), "tensor/pt")
    assert isinstance(tensor, torch.Tensor) and tuple(tensor.shape) == (2, 3)
    with pytest.raises(ValueError, match=r"to torch\.Tensor"):
        d.TorchTensorDeserializer().deserialize(io.BytesIO(b"not npy"), "tensor/pt")
