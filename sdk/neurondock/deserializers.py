"""Response deserializers with the SageMaker Python SDK v2's Accept values and behaviour."""

from __future__ import annotations

import abc
import codecs
import io
import json
from collections.abc import Sequence
from typing import Any, BinaryIO


def _media_type(content_type: str | None) -> str:
    # Servers may add parameters ("application/json; charset=utf-8"); compare the bare type only.
    return (content_type or "").split(";", 1)[0].strip().lower()


class BaseDeserializer(abc.ABC):
    """Turn an InvokeEndpoint response body into Python data."""

    @abc.abstractmethod
    def deserialize(self, stream: BinaryIO, content_type: str) -> Any:
        """Read and close ``stream``; return the decoded data."""

    @property
    @abc.abstractmethod
    def ACCEPT(self) -> tuple[str, ...]:
        """The MIME types sent as ``Accept``, most preferred first."""


class SimpleBaseDeserializer(BaseDeserializer, abc.ABC):
    """A deserializer whose Accept value is fixed at construction."""

    def __init__(self, accept: str | Sequence[str] = "*/*") -> None:
        self.accept = accept

    @property
    def ACCEPT(self) -> tuple[str, ...]:
        """The MIME types sent as ``Accept``, most preferred first."""
        if isinstance(self.accept, str):
            return (self.accept,)
        return tuple(self.accept)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(accept={self.accept!r})"


class BytesDeserializer(SimpleBaseDeserializer):
    """Return the raw response bytes."""

    def __init__(self, accept: str | Sequence[str] = "*/*") -> None:
        super().__init__(accept=accept)

    def deserialize(self, stream: BinaryIO, content_type: str) -> bytes:
        """Return the body as bytes."""
        try:
            return stream.read()
        finally:
            stream.close()


class StringDeserializer(SimpleBaseDeserializer):
    """Decode the response body as text."""

    def __init__(self, encoding: str = "UTF-8", accept: str | Sequence[str] = "application/json") -> None:
        super().__init__(accept=accept)
        self.encoding = encoding

    def deserialize(self, stream: BinaryIO, content_type: str) -> str:
        """Return the body decoded with ``encoding``."""
        try:
            return stream.read().decode(self.encoding)
        finally:
            stream.close()


class JSONDeserializer(SimpleBaseDeserializer):
    """Parse a JSON response body."""

    def __init__(self, accept: str | Sequence[str] = "application/json") -> None:
        super().__init__(accept=accept)

    def deserialize(self, stream: BinaryIO, content_type: str) -> Any:
        """Return the parsed JSON document."""
        try:
            return json.load(codecs.getreader("utf-8")(stream))
        finally:
            stream.close()


class NumpyDeserializer(SimpleBaseDeserializer):
    """Decode NPY, NPZ, JSON or CSV responses (by the response's content type) into numpy arrays."""

    def __init__(
        self, dtype: Any = None, accept: str | Sequence[str] = "application/x-npy", allow_pickle: bool = False
    ) -> None:
        super().__init__(accept=accept)
        self.dtype = dtype
        self.allow_pickle = allow_pickle

    def deserialize(self, stream: BinaryIO, content_type: str) -> Any:
        """Return a numpy array (an ``NpzFile`` for ``application/x-npz``)."""
        import numpy as np

        media_type = _media_type(content_type)
        try:
            if media_type == "text/csv":
                return np.genfromtxt(codecs.getreader("utf-8")(stream), delimiter=",", dtype=self.dtype)
            if media_type == "application/json":
                return np.array(json.load(codecs.getreader("utf-8")(stream)), dtype=self.dtype)
            if media_type in ("application/x-npy", "application/x-npz"):
                try:
                    return np.load(io.BytesIO(stream.read()), allow_pickle=self.allow_pickle)
                except ValueError as exc:
                    if "allow_pickle" not in str(exc):
                        raise
                    raise ValueError(
                        "Please set the param allow_pickle=True to deserialize pickle objects in NumpyDeserializer"
                    ) from exc
        finally:
            stream.close()
        raise ValueError(f"{type(self).__name__} cannot read content type {content_type}.")


class TorchTensorDeserializer(SimpleBaseDeserializer):
    """Decode an NPY response into a ``torch.Tensor`` (``tensor/pt``, as SageMaker does)."""

    def __init__(self, accept: str | Sequence[str] = "tensor/pt") -> None:
        super().__init__(accept=accept)
        self.numpy_deserializer = NumpyDeserializer()

    def deserialize(self, stream: BinaryIO, content_type: str = "tensor/pt") -> Any:
        """Return the body as a tensor."""
        import torch

        try:
            array = self.numpy_deserializer.deserialize(stream, "application/x-npy")
            return torch.from_numpy(array)
        except Exception as exc:
            raise ValueError(f"Unable to deserialize stream of type {type(stream)} to torch.Tensor") from exc
