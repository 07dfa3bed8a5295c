"""The agent's health checks keep one connection to a replica, replace one the replica closed, drop a hung one."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

from neurondock_platform.dataplane import protocol
from neurondock_workers.hosting.process import ReplicaProcess


class FakeReplica:
    """A replica's listening side: the key handshake, then a health answer per frame (or none when hung)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.accepted = 0
        self.hung = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        shake = protocol.ServerHandshake(self.key)
        try:
            conn.sendall(shake.hello())
            meta, _ = protocol.recv_frame(conn)
            conn.sendall(shake.answer(meta))
            while True:
                meta, _ = protocol.recv_frame(conn)
                if not self.hung.is_set():
                    protocol.send_frame(conn, {"status": 200, "requests": 0, "inflight": 0})
        except (OSError, ConnectionError, protocol.ProtocolError, ValueError):
            conn.close()

    def close_connections(self) -> None:
        conns, self.conns = self.conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def close(self) -> None:
        self.listener.close()
        self.close_connections()


def test_health_checks_reuse_one_connection_replace_a_closed_one_and_drop_a_hung_one(tmp_path: Path):
    proc = ReplicaProcess(1, tmp_path, tmp_path / "replica.log", {})
    replica = FakeReplica(proc.channel_key)
    proc.address = replica.address
    try:
        for _ in range(3):
            assert proc.health() == {"status": 200, "requests": 0, "inflight": 0}
        assert replica.accepted == 1, "one connection, one handshake, for every check"

        replica.close_connections()  # as a draining replica does
        assert proc.health() is not None, "a kept connection the replica closed is replaced in the same check"
        assert replica.accepted == 2

        replica.hung.set()
        assert proc.health(timeout=0.3) is None
        replica.hung.clear()
        assert proc.health() is not None
        assert replica.accepted == 3, "a connection that timed out is never read again: its answer may be late"
    finally:
        proc.discard()
        replica.close()
    assert proc._health_sock is None
