"""A real replica process: loads before listening, answers ping and invoke, drains on SIGTERM."""

from __future__ import annotations

import io
import json
import signal
import socket
import struct

import numpy as np
import pytest
import torch
from tests.support.waiting import wait_for

X = np.array([[0.5, -1.0, 2.0, 0.25], [1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def expected(tiny_model_file, reference_model) -> np.ndarray:
    with torch.no_grad():
        return reference_model(tiny_model_file)(torch.from_numpy(X)).numpy()


@pytest.fixture(scope="module")
def default_replica(tiny_model_file, spawn_replica, tmp_path_factory):
    """One replica of the default handler, shared by this module's tests."""
    model_dir = tmp_path_factory.mktemp("default-model")
    (model_dir / "model.pth").write_bytes(tiny_model_file.read_bytes())
    return spawn_replica(
        model_dir,
        "--env-json",
        json.dumps({"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "application/x-npy"}),
    )


def test_replica_serves_ping_and_invocations(default_replica, expected, connect):
    replica = default_replica
    client = connect(replica.address)

    assert client.call({"op": "ping"}) == ({"status": 200}, b"")

    meta, body = client.invoke(npy(X), "application/x-npy", "application/x-npy")
    assert meta["status"] == 200
    assert meta["content_type"] == "application/x-npy"
    assert meta["model_latency_us"] > 0
    np.testing.assert_allclose(np.load(io.BytesIO(body)), expected, rtol=1e-6)

    meta, body = client.invoke(json.dumps(X.tolist()).encode(), "application/json", "application/json")
    assert (meta["status"], meta["content_type"]) == (200, "application/json")
    np.testing.assert_allclose(np.array(json.loads(body)), expected, rtol=1e-6)

    # --env-json reached the handler: */* now means the configured default accept.
    meta, body = client.invoke(npy(X), "application/x-npy", "*/*")
    assert meta["content_type"] == "application/x-npy"

    meta, body = client.invoke(b"[[1, 2, 3]]", "application/json", "application/json")
    assert meta["status"] == 500
    assert "mat1 and mat2 shapes cannot be multiplied" in meta["message"]
    # The caller gets the error, not the server's traceback; the replica log keeps that.
    assert "Traceback (most recent call last)" not in body.decode() and body.decode() == meta["message"]
    assert "Traceback (most recent call last)" in replica.output()

    meta, _ = client.invoke(b"<xml/>", "application/xml")
    assert meta["status"] == 415

    # A failed invocation leaves the connection and the replica serving.
    meta, _ = client.invoke(npy(X), "application/x-npy", "application/x-npy")
    assert meta["status"] == 200
    assert "invocation failed with status 500" in replica.output()


def test_replica_takes_many_connections_at_once(default_replica, expected, connect):
    replica = default_replica
    clients = [connect(replica.address) for _ in range(4)]

    for client in clients:
        client.send({"op": "invoke", "content_type": "application/x-npy", "accept": "application/x-npy"}, npy(X))
    answers = [client.recv() for client in clients]

    for meta, body in answers:
        assert meta["status"] == 200
        np.testing.assert_allclose(np.load(io.BytesIO(body)), expected, rtol=1e-6)

    # A malformed frame gets a 400 and that connection closes; the others carry on.
    bad = connect(replica.address)
    bad.sock.sendall(struct.pack(">II", 10**9, 0))
    meta, _ = bad.recv()
    assert meta["status"] == 400
    assert bad.sock.recv(1) == b""
    assert clients[0].call({"op": "nope"})[0]["status"] == 400
    assert clients[1].call({"op": "ping"})[0] == {"status": 200}


def test_sigterm_finishes_the_request_in_flight_then_exits_cleanly(
    model_dir, write_code, spawn_replica, connect, tmp_path
):
    started = tmp_path / "started"
    write_code(
        f"""
        import pathlib
        import time

        def model_fn(model_dir):
            return None

        def transform_fn(model, input_data, content_type, accept):
            pathlib.Path({str(started)!r}).touch()
            time.sleep(0.5)  # a slow model, so SIGTERM lands mid-request
            return b"done", "text/plain"
        """
    )
    replica = spawn_replica(model_dir)
    client = connect(replica.address)

    client.send({"op": "invoke", "content_type": "application/json"}, b"{}")
    wait_for(started.exists, 10, what="the request to reach the model")
    replica.process.send_signal(signal.SIGTERM)

    meta, body = client.recv()
    assert (meta["status"], body) == (200, b"done")
    assert replica.process.wait(10) == 0
    host, _, port = replica.address.rpartition(":")
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=1)


def test_model_fn_raising_exits_nonzero_with_traceback_before_listening(model_dir, write_code, spawn_replica):
    write_code(
        """
        def model_fn(model_dir):
            raise ValueError("no tokenizer.json in the model directory")
        """
    )

    replica = spawn_replica(model_dir, expect_listening=False)

    output = replica.output()
    assert replica.process.returncode == 1
    assert "Traceback (most recent call last)" in output
    assert "NEURONDOCK_REPLICA_FAILED model_fn raised: ValueError: no tokenizer.json in the model directory" in output
    assert "NEURONDOCK_REPLICA_LISTENING" not in output


def test_a_bad_inference_py_is_reported_as_a_load_failure(model_dir, write_code, spawn_replica):
    write_code(
        """
        def transform_fn(model, data, content_type, accept):
            return data

        def output_fn(prediction, accept):
            return prediction
        """
    )

    replica = spawn_replica(model_dir, expect_listening=False)

    assert replica.process.returncode == 1
    assert "NEURONDOCK_REPLICA_FAILED loading code/inference.py raised: ValueError: Cannot use transform_fn" in (
        replica.output()
    )


def test_a_missing_dependency_points_at_requirements_txt(model_dir, write_code, spawn_replica):
    write_code("not_a_real_package_xyz\n", name="requirements.txt")
    write_code("import not_a_real_package_xyz\n")

    replica = spawn_replica(model_dir, expect_listening=False)

    assert replica.process.returncode == 1
    assert (
        "NEURONDOCK_REPLICA_FAILED loading code/inference.py raised: ModuleNotFoundError: "
        "No module named 'not_a_real_package_xyz' (code/requirements.txt is not installed here"
    ) in replica.output()
