"""Request serializers with the SageMaker Python SDK v2's content types and behaviour."""

from __future__ import annotations

import abc
import csv
import io
import json
import sys
from typing import Any


def _is_ndarray(data: Any) -> bool:
    # Look numpy up in sys.modules rather than importing it: data can only be an ndarray if
    # numpy is already loaded, and `import neurondock` must stay numpy-free.
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(data, numpy.ndarray)


def _is_tensor(data: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(data, torch.Tensor)


def _tensor_to_ndarray(tensor: Any) -> Any:
    return tensor.detach().cpu().numpy()


class BaseSerializer(abc.ABC):
    """Turn Python data into an InvokeEndpoint request body."""

    @abc.abstractmethod
    def serialize(self, data: Any) -> Any:
        """Return the request body for ``data``."""

    @property
    @abc.abstractmethod
    def CONTENT_TYPE(self) -> str:
        """The MIME type sent as ``ContentType``."""


class SimpleBaseSerializer(BaseSerializer, abc.ABC):
    """A serializer whose content type is fixed at construction."""

    def __init__(self, content_type: str = "application/json") -> None:
        if not isinstance(content_type, str):
            raise ValueError(f"content_type must be a string, not {type(content_type).__name__}")
        self.content_type = content_type

    @property
    def CONTENT_TYPE(self) -> str:
        """The MIME type sent as ``ContentType``."""
        return self.content_type

    def __repr__(self) -> str:
        return f"{type(self).__name__}(content_type={self.content_type!r})"


def _to_list(value: Any) -> Any:
    if _is_ndarray(value):
        return value.tolist()
    if _is_tensor(value):
        return value.detach().cpu().tolist()
    return value


class JSONSerializer(SimpleBaseSerializer):
    """Serialize to JSON; arrays and tensors (also as dict values) become nested lists."""

    def serialize(self, data: Any) -> Any:
        """Return ``data`` as a JSON string (file-like objects are read as they are)."""
        if isinstance(data, dict):
            return json.dumps({key: _to_list(value) for key, value in data.items()})
        if hasattr(data, "read"):
            return data.read()
        return json.dumps(_to_list(data))


class NumpySerializer(SimpleBaseSerializer):
    """Serialize to NPY bytes (``np.save``), the fast default for array data."""

    def __init__(self, dtype: Any = None, content_type: str = "application/x-npy") -> None:
        super().__init__(content_type=content_type)
        self.dtype = dtype

    def serialize(self, data: Any) -> Any:
        """Return ``data`` as NPY bytes; file-like objects are assumed to hold NPY already."""
        import numpy as np

        if _is_tensor(data):
            data = _tensor_to_ndarray(data)
        if isinstance(data, np.ndarray):
            if data.size == 0:
                raise ValueError("Cannot serialize empty array.")
            return self._serialize_array(data)
        if isinstance(data, list):
            if len(data) == 0:
                raise ValueError("Cannot serialize empty array.")
            return self._serialize_array(np.array(data, self.dtype))
        if hasattr(data, "read"):
            return data.read()
        return self._serialize_array(np.array(data))

    @staticmethod
    def _serialize_array(array: Any) -> bytes:
        import numpy as np

        buffer = io.BytesIO()
        np.save(buffer, array)
        return buffer.getvalue()


class CSVSerializer(SimpleBaseSerializer):
    """Serialize a row or a sequence of rows to CSV text."""

    def __init__(self, content_type: str = "text/csv") -> None:
        super().__init__(content_type=content_type)

    def serialize(self, data: Any) -> Any:
        """Return ``data`` as CSV; rows are joined with newlines, file-like objects are read."""
        if hasattr(data, "read"):
            return data.read()
        mutable_sequence = self._is_sequence_like(data) and hasattr(data, "__setitem__")
        has_rows = len(data) > 0 and self._is_sequence_like(data[0])
        if mutable_sequence and has_rows:
            return "\n".join(self._serialize_row(row) for row in data)
        return self._serialize_row(data)

    @staticmethod
    def _serialize_row(row: Any) -> str:
        if isinstance(row, str):
            return row
        if _is_tensor(row):
            row = _tensor_to_ndarray(row)
        if _is_ndarray(row):
            row = row.flatten()
        if hasattr(row, "__len__"):
            if len(row) == 0:
                raise ValueError("Cannot serialize empty array")
            buffer = io.StringIO()
            csv.writer(buffer, delimiter=",").writerow(row)
            return buffer.getvalue().rstrip("\r\n")
        raise ValueError(f"Unable to handle input format: {type(row)}")

    @staticmethod
    def _is_sequence_like(data: Any) -> bool:
        return hasattr(data, "__iter__") and hasattr(data, "__getitem__")


class IdentitySerializer(SimpleBaseSerializer):
    """Send the data unchanged (bytes, str or a file-like object)."""

    def __init__(self, content_type: str = "application/octet-stream") -> None:
        super().__init__(content_type=content_type)

    def serialize(self, data: Any) -> Any:
        """Return ``data`` as it is."""
        return data


class StringSerializer(SimpleBaseSerializer):
    """Send a string as text."""

    def __init__(self, content_type: str = "text/plain") -> None:
        super().__init__(content_type=content_type)

    def serialize(self, data: Any) -> Any:
        """Return ``data`` as a string."""
        if not isinstance(data, str):
            raise ValueError(f"{type(self).__name__} only supports str, not {type(data).__name__}")
        return data


class TorchTensorSerializer(SimpleBaseSerializer):
    """Send a ``torch.Tensor`` as NPY bytes under the ``tensor/pt`` content type (as SageMaker does)."""

    def __init__(self, content_type: str = "tensor/pt") -> None:
        super().__init__(content_type=content_type)
        self.numpy_serializer = NumpySerializer()

    def serialize(self, data: Any) -> Any:
        """Return the tensor's NPY bytes."""
        import torch

        if not isinstance(data, torch.Tensor):
            raise ValueError(f"Object of type {type(data)} is not a torch.Tensor")
        try:
            return self.numpy_serializer.serialize(_tensor_to_ndarray(data))
        except Exception as exc:
            raise ValueError(f"Unable to serialize tensor of shape {tuple(data.shape)}: {exc}") from exc
