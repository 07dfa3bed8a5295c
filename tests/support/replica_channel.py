"""An npy prediction sent straight to a replica over its channel (the API's hop, without the API)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from neurondock_platform.dataplane import protocol

_NPY = {"op": "invoke", "content_type": "application/x-npy", "accept": "application/x-npy"}


def invoke_npy(address: str, key: str, array: np.ndarray, timeout: float = 30.0) -> tuple[dict[str, Any], Any]:
    """Send ``array`` as npy; return the answer's meta and its array (its raw body unless 200)."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    with protocol.connect(address, key, timeout=timeout) as sock:
        protocol.send_frame(sock, dict(_NPY), buffer.getvalue())
        meta, body = protocol.recv_frame(sock)
    return meta, (np.load(io.BytesIO(body)) if meta["status"] == 200 else body)


def predict_npy(address: str, key: str, array: np.ndarray, timeout: float = 30.0) -> np.ndarray:
    """The prediction for ``array``; fails the test on any other answer."""
    meta, out = invoke_npy(address, key, array, timeout)
    assert meta["status"] == 200, (meta, out[-2000:])
    return out
