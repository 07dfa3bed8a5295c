"""The API's protocol answers plain POSTs to the paths an app names as uvicorn's cycle would; the rest go through it."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import uvicorn

from neurondock_platform.server import uvicorn_config
from neurondock_platform.uvicorn_server import DIRECT_BODY_LIMIT, DirectCycle


class Transport(asyncio.Transport):
    """A transport recording each send."""

    def __init__(self) -> None:
        super().__init__()
        self.sends: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("10.0.0.9", 5000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def write(self, data: Any) -> None:
        self.sends.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.sends.append(b"".join(list_of_data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class Echo:
    """An app answering with what it was asked, which names ``/direct/*`` as served directly."""

    def __init__(self, *, gate: asyncio.Event | None = None, header_value: bytes = b"ok", fail: bool = False) -> None:
        self.gate = gate
        self.header_value = header_value
        self.fail = fail
        self.served: list[str] = []  # "direct" or "cycle", per request
        self.after_body: list[str] = []  # what a direct request's receive gives once the body is read

    def direct(self, path: str) -> Any:
        return self.serve_direct if path.startswith("/direct/") else None

    async def serve_direct(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.served.append("direct")
        await self.answer(scope, receive, send)
        self.after_body.append((await receive())["type"])

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.served.append("cycle")
        await self.answer(scope, receive, send)

    async def answer(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ValueError("the app broke")
        seen = {
            "method": scope["method"],
            "path": scope["path"],
            "query": scope["query_string"].decode(),
            "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
            "body": body.decode(),
            "client": list(scope["client"]),
        }
        payload = json.dumps(seen).encode()
        headers = [(b"x-note", self.header_value), (b"Content-Length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _protocol(app: Any, transport: Transport) -> Any:
    config = uvicorn_config(app, SimpleNamespace(host="127.0.0.1", port=0), lifespan="off")
    config.load()
    state = uvicorn.server.ServerState()
    state.default_headers = [(b"date", b"Mon, 07 Dec 2026 03:00:00 GMT")]
    protocol = config.http_protocol_class(config=config, server_state=state, app_state={})
    protocol.connection_made(transport)
    return protocol


async def _exchange(app: Any, *requests: bytes, answers: int | None = None) -> tuple[Transport, Any]:
    transport = Transport()
    protocol = _protocol(app, transport)
    for request in requests:
        protocol.data_received(request)
    wanted = len(requests) if answers is None else answers
    while protocol.server_state.total_requests < wanted and not transport.closed:
        await asyncio.sleep(0)
    await asyncio.sleep(0)  # the end of the pass, where held writes leave
    return transport, protocol


def _post(path: str, body: bytes = b"abc", extra: str = "", version: str = "1.1") -> bytes:
    head = f"POST {path} HTTP/{version}\r\nHost: x\r\nX-Case: Mixed \r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def _cycle_twin(path: str) -> str:
    return path.replace("/direct/", "/served/")  # as long, and not a direct path


def test_a_plain_post_to_a_direct_path_is_answered_as_uvicorns_cycle_answers_it_in_one_send():
    direct_app, cycle_app = Echo(), Echo()
    direct, _ = asyncio.run(_exchange(direct_app, _post("/direct/a?x=1&y=%2F")))
    cycle, _ = asyncio.run(_exchange(cycle_app, _post(_cycle_twin("/direct/a?x=1&y=%2F"))))
    assert direct_app.served == ["direct"] and cycle_app.served == ["cycle"]
    assert len(direct.sends) == 1 and not direct.closed
    assert direct.sends[0] == cycle.sends[0].replace(b"/served/", b"/direct/")
    answer = json.loads(direct.sends[0].partition(b"\r\n\r\n")[2])
    assert answer["query"] == "x=1&y=%2F" and answer["body"] == "abc" and direct_app.after_body == ["http.disconnect"]
    assert ["x-case", "Mixed"] in answer["headers"] and answer["client"] == ["10.0.0.9", 5000]
    assert direct.sends[0].startswith(b"HTTP/1.1 200 OK\r\ndate: Mon, 07 Dec 2026 03:00:00 GMT\r\nx-note: ok\r\n")


def test_a_body_in_pieces_reaches_the_app_whole():
    app = Echo()
    request = _post("/direct/a", b"0123456789")
    transport, _ = asyncio.run(_exchange(app, request[:-7], request[-7:-3], request[-3:], answers=1))
    assert app.served == ["direct"]
    assert json.loads(transport.sends[0].partition(b"\r\n\r\n")[2])["body"] == "0123456789"


def test_requests_that_are_not_plain_go_through_uvicorns_cycle():
    big = b"x" * (DIRECT_BODY_LIMIT + 1)
    chunked = b"POST /direct/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    for request in (
        _post("/cycle/a"),
        _post("/direct/a", extra="Expect: 100-continue\r\n"),
        _post("/direct/a", extra="Connection: close\r\n"),
        _post("/direct/a", version="1.0"),
        _post("/direct/%61"),
        _post("/direct/a", big),
        chunked,
        b"PUT /direct/a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    ):
        app = Echo()
        transport, _ = asyncio.run(_exchange(app, request))
        assert app.served == ["cycle"], request[:80]
        assert b"HTTP/1.1 200 OK" in b"".join(transport.sends)
    app = Echo()
    transport, _ = asyncio.run(_exchange(app, _post("/direct/a", extra="Expect: 100-continue\r\n")))
    assert b"".join(transport.sends).startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")


def test_pipelined_requests_are_answered_one_after_another_in_order():
    async def scenario() -> tuple[Transport, Echo]:
        gate = asyncio.Event()
        app = Echo(gate=gate)
        transport = Transport()
        protocol = _protocol(app, transport)
        protocol.data_received(_post("/direct/1", b"one") + _post("/direct/2", b"two") + _post("/cycle/3", b"3"))
        for _ in range(5):
            await asyncio.sleep(0)
        assert transport.sends == [] and app.served == ["direct"]  # the others wait for the first's answer
        gate.set()
        while protocol.server_state.total_requests < 3:
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        return transport, app

    transport, app = asyncio.run(scenario())
    bodies = [
        json.loads(s.partition(b"\r\n\r\n")[2])["body"] for s in b"".join(transport.sends).split(b"HTTP/1.1 ")[1:]
    ]
    assert bodies == ["one", "two", "3"]
    assert app.served[0] == "direct" and not transport.closed


def test_a_failing_app_or_a_bad_header_value_gets_uvicorns_500_and_a_closed_connection():
    for app in (Echo(fail=True), Echo(header_value=b"ok\r\nset-cookie: x=1")):
        transport, _ = asyncio.run(_exchange(app, _post("/direct/a"), answers=1))
        assert app.served == ["direct"]
        assert b"".join(transport.sends).startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
        assert b"set-cookie" not in b"".join(transport.sends) and transport.closed


def test_a_client_gone_before_the_answer_gets_nothing_written_and_a_shutdown_answers_then_closes():
    async def scenario(shutdown: bool) -> Transport:
        gate = asyncio.Event()
        transport = Transport()
        protocol = _protocol(Echo(gate=gate), transport)
        protocol.data_received(_post("/direct/a"))
        await asyncio.sleep(0)
        assert isinstance(protocol.cycle, DirectCycle)
        if shutdown:
            protocol.shutdown()  # the server stopping: the answer in progress is the connection's last
        else:
            protocol.connection_lost(None)
        gate.set()
        while protocol.tasks:
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        return transport

    gone = asyncio.run(scenario(False))
    assert gone.sends == [] and gone.closed
    stopped = asyncio.run(scenario(True))
    assert len(stopped.sends) == 1 and b"\r\nconnection: close\r\n" in stopped.sends[0] and stopped.closed
