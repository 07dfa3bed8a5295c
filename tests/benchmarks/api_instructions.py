"""The API's in-process request path, for counting instructions per request under valgrind.

Raw requests of the peer benchmark's shape (botocore-signed headers, a small npy body) go to the
uvicorn protocol the API runs (``server.uvicorn_config``) over a stand-in transport, through the
platform's ASGI dispatch into the runtime with the real SigV4 verifier, router and metrics, a static
routing table and a canned replica answer (no replica client, no sockets); each answer brings the
next request. The machine's load does not move an instruction count; the difference between two
request counts, over the difference in requests, is the count per request (docs/measured.md, "The
API's request path beside uvicorn's cycle"):

    for n in 300 1300; do PYTHONHASHSEED=0 valgrind --tool=cachegrind --cache-sim=no \\
        python -m tests.benchmarks.api_instructions $n 2>&1 | grep "I *refs"; done

``python -m tests.benchmarks.api_instructions N --time`` times N requests instead (a hot run, noisy).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BODY = b"\x93NUMPY" + bytes(186)  # 192 bytes, as the tiny MLP's npy input
ANSWER = {"status": 200, "content_type": "application/x-npy", "model_latency_us": 60, "queue_us": 5, "batch_size": 1}


class CannedCaller:
    """A replica that answers every call at once with the same npy."""

    async def call(self, address: str, meta: dict[str, Any], body: bytes, timeout: float, **_: Any) -> Any:
        return ANSWER, BODY

    def abandon(self, address: str, key: str) -> None: ...

    async def close(self) -> None: ...


class Transport:
    """Enough of an asyncio transport for uvicorn's protocol, and its client: each answer brings the next request."""

    def __init__(self, loop: asyncio.AbstractEventLoop, raw: bytes, count: int) -> None:
        self.loop = loop
        self.raw = raw
        self.left = count
        self.last = b""
        self.protocol: Any = None
        self.done = loop.create_future()

    def send(self) -> None:
        """The client's next request, as the loop would hand it over on a socket's readiness."""
        self.protocol.data_received(self.raw)

    def write(self, data: bytes) -> None:
        self.last = data
        self.left -= 1
        if self.left > 0:
            self.loop.call_soon(self.send)
        else:
            self.done.set_result(None)

    def writelines(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def is_closing(self) -> bool:
        return False

    def close(self) -> None: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def set_protocol(self, protocol: Any) -> None: ...


def build(data_dir: Path) -> tuple[Any, Any, bytes]:  # config, server, request
    """The protocol over a stand-in transport, and one raw signed request."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from neurondock_platform.config import Settings
    from neurondock_platform.dataplane.routing import EndpointRoute, ReplicaRoute, VariantRoute
    from neurondock_platform.dataplane.runtime import RuntimeApp
    from neurondock_platform.db import make_engine, make_sessionmaker, session_scope
    from neurondock_platform.models import EndpointStatus
    from neurondock_platform.server import NeurondockASGI, uvicorn_config
    from neurondock_platform.services.accounts import ensure_root_account, root_identity
    from neurondock_platform.uvicorn_server import QuietServer
    from tests.conftest import ACCESS_KEY, ACCOUNT_ID, SECRET_KEY
    from tests.support import schema
    from tests.unit.dataplane.fakes import StaticTable, verifier

    settings = Settings.from_env(
        {},
        data_dir=data_dir,
        root_access_key_id=ACCESS_KEY,
        root_secret_access_key=SECRET_KEY,
        account_id=ACCOUNT_ID,
        host_id="host-bench",
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    factory = make_sessionmaker(
        make_engine(schema.sqlite_with_schema(Path(settings.database_url.removeprefix("sqlite:///"))))
    )
    with session_scope(factory) as session:
        ensure_root_account(session, root_identity(settings))
    route = EndpointRoute(
        ACCOUNT_ID, "ep", EndpointStatus.IN_SERVICE, (VariantRoute("AllTraffic", 1.0, (ReplicaRoute(1, "r:1"),)),)
    )
    table = StaticTable({(ACCOUNT_ID, "ep"): route})
    app = RuntimeApp(settings, factory, verifier(settings, factory), caller=CannedCaller(), table=table)

    asgi = NeurondockASGI(settings, session_factory=factory)
    asgi.runtime = app  # the platform's dispatch, with the stand-ins above behind it

    config = uvicorn_config(asgi, settings, lifespan="off")
    server = QuietServer(config)
    config.load()
    path = "/endpoints/ep/invocations"
    request = AWSRequest(
        method="POST",
        url=f"http://127.0.0.1:8080{path}",
        data=BODY,
        headers={"Content-Type": "application/x-npy", "Accept": "application/x-npy"},
    )
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sagemaker", settings.region).add_auth(request)
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1:8080", f"Content-Length: {len(BODY)}"]
    head += [f"{k}: {v}" for k, v in request.headers.items() if k.lower() not in ("host", "content-length")]
    raw = ("\r\n".join(head) + "\r\n\r\n").encode() + BODY
    return config, server, raw


def main() -> None:
    """Serve N requests, one at a time on one keep-alive connection."""
    import uvloop

    count = int(sys.argv[1])
    timed = "--time" in sys.argv
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    with tempfile.TemporaryDirectory() as folder:
        config, server, raw = build(Path(folder) / "nd")
        protocol = config.http_protocol_class(config, server.server_state, {}, loop)
        transport = Transport(loop, raw, count)
        transport.protocol = protocol
        protocol.connection_made(transport)
        started = time.perf_counter()
        loop.call_soon(transport.send)
        loop.run_until_complete(transport.done)
        if timed:
            print(f"{(time.perf_counter() - started) / count * 1e6:.1f} us a request")
        assert transport.last.startswith(b"HTTP/1.1 200"), transport.last[:300]
        protocol.connection_lost(None)


if __name__ == "__main__":
    main()
