"""An ordinary account's model code, served by a real ``neurondock up``, runs in the sandbox (issue 11).

One platform for the module, with a short model timeout and a small cap on unpacked artifacts so the
hang and the bomb finish quickly. Every attack is what a tenant's ``code/inference.py`` tried on the
platform before the sandbox: each read and write below succeeded then.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import socket
import sqlite3
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from tests.support.identity import Keys, new_account
from tests.support.platform import Platform, running_platform
from tests.support.torch_models import pack_model
from tests.support.waiting import wait_for

from neurondock_platform.dataplane import protocol
from neurondock_workers.sandbox import limits_for

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"
MODEL_TIMEOUT = 3.0
EXTRACT_CAP_MB = 64
HOST = "host-e2e"
GIB = 1024**3

PROBE = """
import json, os, resource, socket, threading

import torch


def model_fn(model_dir):
    return None


def input_fn(body, content_type):
    return json.loads(body)


def predict_fn(data, model):
    if data.get("raise"):
        raise ValueError("the input has no 'text' field")
    out = {}
    for path in data.get("read", []):
        try:
            with open(path, "rb") as f:
                out[path] = "READ " + f.read(64).decode("latin-1")
        except Exception as exc:
            out[path] = f"{type(exc).__name__}: {exc}"
    for path in data.get("write", []):
        try:
            with open(path, "wb") as f:
                f.write(b"tenant was here")
            out[path] = "WROTE"
        except Exception as exc:
            out[path] = f"{type(exc).__name__}: {exc}"
    for host, port in data.get("connect", []):
        try:
            socket.create_connection((host, port), timeout=3).close()
            out[f"{host}:{port}"] = "CONNECTED"
        except OSError as exc:
            out[f"{host}:{port}"] = f"{type(exc).__name__}: {exc}"
    with open("/proc/net/dev") as f:
        out["interfaces"] = sorted(line.split(":")[0].strip() for line in f.readlines()[2:])
    names = ("RLIMIT_DATA", "RLIMIT_NPROC", "RLIMIT_NOFILE")
    out["limits"] = {n: resource.getrlimit(getattr(resource, n))[0] for n in names}
    for kind, size in data.get("allocate", []):
        # Uncaught past the limit: the invocation fails, as a model's own allocation would.
        block = torch.empty(size, dtype=torch.uint8) if kind == "torch" else bytearray(size)
        out[f"allocated {kind}"] = len(block)
        del block
    if data.get("open_files"):
        files = []
        try:
            while len(files) < data["open_files"]:
                files.append(open("/dev/null"))
            out["open_files"] = f"{len(files)} opened"
        except OSError as exc:
            out["open_files"] = f"{len(files)} opened, then {type(exc).__name__}: {exc}"
        finally:
            for f in files:
                f.close()
    if data.get("threads"):
        stop, started = threading.Event(), []
        threading.stack_size(256 * 1024)
        try:
            while len(started) < data["threads"]:
                started.append(threading.Thread(target=stop.wait))
                started[-1].start()
            out["threads"] = f"{len(started)} started"
        except RuntimeError as exc:
            started.pop()
            out["threads"] = f"{len(started)} started, then {type(exc).__name__}: {exc}"
        finally:
            stop.set()
            for t in started:
                t.join()
            threading.stack_size(0)
    out["uid"] = os.getuid()
    out["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    out["secret_env"] = sorted(k for k in os.environ if k.startswith(("NEURONDOCK_ROOT", "AWS_")))
    return out


def output_fn(prediction, accept):
    return json.dumps(prediction), "application/json"
"""

# The same probe under EnableNetworkIsolation (another artifact, so each endpoint unpacks its own).
ISOLATED = "\n# deployed with EnableNetworkIsolation\n"

# A model whose loading takes more memory than its instance type gives a replica.
GREEDY = """
def model_fn(model_dir):
    return bytearray(SIZE)
"""

HANGS = """
import json, time


def model_fn(model_dir):
    return None


def predict_fn(data, model):
    if data == "hang":
        time.sleep(3600)
    return data


def input_fn(body, content_type):
    return body  # JSON bodies reach input_fn as str (the toolkit decodes them)


def output_fn(prediction, accept):
    return json.dumps(prediction), "application/json"
"""


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    data_dir = tmp_path_factory.mktemp("sandbox-e2e") / "data"
    # What an earlier run left behind: an unpacked artifact and a per-replica copy of the old layout.
    stale = data_dir / "hosts" / HOST / "model-data" / "extracted" / ("0" * 32 + "-" + "0" * 16)
    legacy = data_dir / "replicas" / "999" / "model"
    for leftover in (stale, legacy):
        leftover.mkdir(parents=True)
        (leftover / "model.pt").write_bytes(b"old")
    yield from running_platform(
        data_dir,
        extra_env={
            "NEURONDOCK_MODEL_TIMEOUT": str(MODEL_TIMEOUT),
            "NEURONDOCK_MAX_MODEL_EXTRACTED_MB": str(EXTRACT_CAP_MB),
            "NEURONDOCK_STANDBY_POOL_SIZE": "2",
        },
    )


@pytest.fixture(scope="module")
def tenant(platform: Platform) -> Keys:
    """An ordinary (non-admin) account: the tenant whose code is not to be trusted."""
    from neurondock_platform.db import make_engine, make_sessionmaker

    engine = make_engine(f"sqlite:///{platform.data_dir / 'neurondock.db'}")
    try:
        return new_account(make_sessionmaker(engine), "tenant")
    finally:
        engine.dispose()


class Tenant:
    """The ordinary account's boto3 clients and its bucket."""

    def __init__(self, platform: Platform, keys: Keys, tmp: Path) -> None:
        creds = {"access_key": keys.access_key_id, "secret_key": keys.secret_access_key}
        self.platform, self.keys, self.tmp = platform, keys, tmp
        self.sm = platform.client("sagemaker", **creds)
        self.rt = platform.client("sagemaker-runtime", **creds)
        self.s3 = platform.client("s3", **creds)
        self.bucket = f"tenant-{keys.account_id}"
        self.s3.create_bucket(Bucket=self.bucket)

    def deploy(
        self,
        code: dict[str, str] | None = None,
        *,
        env: dict[str, str] | None = None,
        raw: bytes | None = None,
        wait: bool = True,
        isolated: bool = False,
    ) -> str:
        name = f"sbx-{uuid.uuid4().hex[:8]}"
        key = f"{name}/model.tar.gz"
        if raw is None:
            raw = pack_model(self.tmp / f"{name}.tar.gz", code=code).read_bytes()
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=raw)
        container = {"Image": IMAGE, "ModelDataUrl": f"s3://{self.bucket}/{key}", "Environment": env or {}}
        role = f"arn:aws:iam::{self.keys.account_id}:role/SageMakerRole"
        self.sm.create_model(
            ModelName=name, PrimaryContainer=container, ExecutionRoleArn=role, EnableNetworkIsolation=isolated
        )
        variant = {
            "VariantName": "AllTraffic",
            "ModelName": name,
            "InitialInstanceCount": 1,
            "InstanceType": "ml.c5.large",
        }
        self.sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant])
        self.sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
        if wait:
            deadline = time.monotonic() + 120
            while (described := self.sm.describe_endpoint(EndpointName=name))["EndpointStatus"] != "InService":
                assert described["EndpointStatus"] == "Creating", described.get("FailureReason")
                assert time.monotonic() < deadline, "the endpoint did not come into service"
                time.sleep(0.2)
        return name

    def invoke(self, name: str, body: bytes | str, **kw: Any) -> Any:
        return self.rt.invoke_endpoint(EndpointName=name, Body=body, ContentType="application/json", **kw)


@pytest.fixture(scope="module")
def tenant_clients(platform: Platform, tenant: Keys, tmp_path_factory: pytest.TempPathFactory) -> Tenant:
    return Tenant(platform, tenant, tmp_path_factory.mktemp("tenant"))


def _db(platform: Platform, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(platform.data_dir / "neurondock.db", timeout=10) as db:
        return db.execute(query, args).fetchall()


def _replicas(platform: Platform, endpoint: str) -> list[tuple[int, str | None, str | None, int, str]]:
    return [
        tuple(row)  # type: ignore[misc]
        for row in _db(
            platform,
            "SELECT r.id, r.address, r.channel_key, r.restarts, r.state FROM replicas r "
            "JOIN endpoints e ON e.id = r.endpoint_id WHERE e.name = ? ORDER BY r.id",
            endpoint,
        )
    ]


def _extracted(platform: Platform) -> Path:
    return platform.data_dir / "hosts" / HOST / "model-data" / "extracted"


@pytest.fixture(scope="module")
def hangs(tenant_clients: Tenant) -> str:
    """Two replicas of a model that hangs on the input "hang" (and whose files are the probe's target)."""
    return tenant_clients.deploy({"inference.py": HANGS}, env={"SAGEMAKER_MODEL_SERVER_WORKERS": "2"})


@pytest.fixture(scope="module")
def probe(tenant_clients: Tenant, hangs: str) -> str:
    """A model that tries whatever reads and writes it is told to, and raises when asked."""
    return tenant_clients.deploy({"inference.py": PROBE})


def test_an_agent_start_removes_what_an_earlier_run_unpacked(platform: Platform) -> None:
    extracted, legacy = _extracted(platform), platform.data_dir / "replicas" / "999" / "model"
    deadline = time.monotonic() + 60
    # The agent cleans up right after it registers its host (`up` prints its banner before that).
    while (
        not _db(platform, "SELECT sandbox FROM hosts WHERE id = ?", HOST) or legacy.exists() or any(extracted.iterdir())
    ):
        assert time.monotonic() < deadline, f"left behind: {list(extracted.iterdir())}, {legacy.exists()}"
        time.sleep(0.1)
    assert _db(platform, "SELECT sandbox FROM hosts WHERE id = ?", HOST) == [("bwrap",)]


def test_model_code_cannot_reach_the_platform_the_host_or_other_replicas(platform, tenant_clients, probe) -> None:
    victim_file = next(
        p for d in _extracted(platform).iterdir() for p in (d / "code").glob("*.py") if "sleep" in p.read_text()
    )
    agent_pid = _db(platform, "SELECT agent_pid FROM hosts WHERE id = ?", HOST)[0][0]
    credentials = platform.data_dir / "credentials.json"
    database = platform.data_dir / "neurondock.db"
    assert credentials.is_file() and database.is_file(), "the targets exist on the host"
    objects = platform.data_dir / "objects"
    own_code = "/opt/ml/model/code/inference.py"

    attempt = {
        # Its own code comes last: readable, so a refusal of the others is the sandbox's doing.
        "read": [
            str(credentials),
            str(database),
            "/etc/shadow",
            f"/proc/{agent_pid}/environ",
            str(victim_file),
            own_code,
        ],
        "write": [str(objects / "planted"), str(victim_file), "/opt/ml/model/code/planted.py", "/tmp/scratch"],
    }
    answer = json.loads(tenant_clients.invoke(probe, json.dumps(attempt))["Body"].read())

    for path in attempt["read"][:-1]:
        assert not answer[path].startswith("READ"), f"model code read {path}: {answer[path]}"
    assert answer[own_code].startswith("READ") and "import json" in answer[own_code]
    for path in attempt["write"][:-1]:
        assert answer[path] != "WROTE", f"model code wrote {path}"
    assert answer["/tmp/scratch"] == "WROTE", "its private /tmp is writable"
    assert "Read-only file system" in answer["/opt/ml/model/code/planted.py"]
    assert not (objects / "planted").exists() and "time.sleep(3600)" in victim_file.read_text()
    if os.geteuid() == 0:
        assert answer["uid"] >= 2_000_000_000, "an unprivileged uid of its own, not the platform's"
    assert agent_pid not in answer["pids"] and len(answer["pids"]) <= 3, "its own pid namespace"
    assert answer["secret_env"] == [], "no platform credentials in its environment"


def test_a_raw_frame_to_a_replica_port_is_refused(platform, probe) -> None:
    ((_, address, key, _, _),) = _replicas(platform, probe)
    assert address and key
    host, _, port = address.rpartition(":")

    with socket.create_connection((host, int(port)), timeout=5) as sock:
        hello, _ = protocol.recv_frame(sock)
        protocol.send_frame(sock, {"op": "invoke", "content_type": "application/json"}, b'{"read": ["/etc/hostname"]}')
        refusal, _ = protocol.recv_frame(sock)
        assert hello["op"] == "hello"
        assert refusal["status"] == 403 and "only from the neurondock platform" in refusal["message"]
        assert sock.recv(1) == b"", "and the connection is closed"
    # Another replica's key does not open it either; its own does.
    with pytest.raises(protocol.ChannelAuthError):
        protocol.connect(address, protocol.new_key())
    with protocol.connect(address, key) as sock:
        protocol.send_frame(sock, {"op": "ping"})
        assert protocol.recv_frame(sock)[0]["status"] == 200


def test_a_failing_model_returns_its_error_and_logs_its_traceback(platform, tenant_clients, probe) -> None:
    with pytest.raises(ClientError) as info:
        tenant_clients.invoke(probe, json.dumps({"raise": True}))

    error = info.value.response
    assert error["Error"]["Code"] == "ModelError" and error["OriginalStatusCode"] == 500
    assert error["OriginalMessage"] == "ValueError: the input has no 'text' field"
    body = json.dumps(error)
    assert "Traceback" not in body and str(platform.data_dir) not in body and "neurondock_workers" not in body
    assert error["LogStreamArn"].endswith(f"/aws/sagemaker/Endpoints/{probe}:log-stream:AllTraffic")
    ((rid, *_),) = _replicas(platform, probe)
    log = (platform.data_dir / "replicas" / str(rid) / "replica.log").read_text()
    assert "Traceback (most recent call last)" in log and "the input has no 'text' field" in log


def test_a_hung_replica_is_recycled_and_its_queue_served_by_the_other(platform, tenant_clients, hangs) -> None:
    assert [r[3] for r in _replicas(platform, hangs)] == [0, 0]
    outcome: dict[str, Any] = {}
    answers: list[Any] = []

    def hang() -> None:
        started = time.monotonic()
        try:
            tenant_clients.invoke(hangs, "hang")
        except ClientError as exc:
            outcome.update(code=exc.response["Error"]["Code"], message=str(exc), waited=time.monotonic() - started)

    def company(worker: int) -> None:
        # Two callers at once: least-outstanding routing puts some of these behind the hang.
        for i in range(10):
            try:
                answers.append(json.loads(tenant_clients.invoke(hangs, f"w{worker}-{i}")["Body"].read()))
            except ClientError as exc:
                answers.append(exc.response["Error"]["Code"])

    threads = [threading.Thread(target=hang)] + [threading.Thread(target=company, args=(w,)) for w in range(2)]
    threads[0].start()
    time.sleep(0.3)
    for thread in threads[1:]:
        thread.start()
    for thread in threads:
        thread.join(MODEL_TIMEOUT * 3 + 10)

    assert sorted(answers) == sorted(f"w{w}-{i}" for w in range(2) for i in range(10)), answers
    assert outcome["code"] == "ModelError" and "timed out" in outcome["message"]
    assert MODEL_TIMEOUT <= outcome["waited"] < MODEL_TIMEOUT + 5
    # The hung replica was replaced by a fresh process, and both serve again.
    deadline = time.monotonic() + 60
    while sorted((r[3], r[4]) for r in _replicas(platform, hangs)) != [(0, "Ready"), (1, "Ready")]:
        assert time.monotonic() < deadline, _replicas(platform, hangs)
        time.sleep(0.2)
    assert json.loads(tenant_clients.invoke(hangs, "fine")["Body"].read()) == "fine"
    rid = next(r[0] for r in _replicas(platform, hangs) if r[3] == 1)
    log = (platform.data_dir / "replicas" / str(rid) / "replica.log").read_text()
    assert "NEURONDOCK_REPLICA_TIMED_OUT" in log and "in predict_fn" in log, "the hang's stack is in the log"


@pytest.mark.slow
def test_a_hung_model_alone_serves_again_within_timeout_plus_restart(platform, tenant_clients) -> None:
    name = tenant_clients.deploy({"inference.py": HANGS})
    ((_, _, first_key, _, _),) = _replicas(platform, name)
    with pytest.raises(ClientError) as info:
        tenant_clients.invoke(name, "hang")
    assert info.value.response["Error"]["Code"] == "ModelError"
    timed_out = time.monotonic()
    while True:
        try:
            answer = tenant_clients.invoke(name, "fine")
            break
        except ClientError:
            assert time.monotonic() < timed_out + 60, "the endpoint did not serve again"
            time.sleep(0.2)
    print(f"served again {time.monotonic() - timed_out:.1f} s after the timeout")
    assert json.loads(answer["Body"].read()) == "fine"
    ((_, _, key, restarts, state),) = _replicas(platform, name)
    assert (restarts, state) == (1, "Ready") and key != first_key, "the hung process was replaced"


def _bomb(size: int) -> bytes:
    # Zeros compress about a thousand to one: 200 MB of model in a 200 KB archive.
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("model.pt")
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(size)))
    return gzip.compress(raw.getvalue(), compresslevel=1)


def test_an_archive_that_unpacks_past_the_cap_fails_with_a_clear_reason(platform, tenant_clients, probe) -> None:
    bomb = _bomb(200 * 1024 * 1024)
    assert len(bomb) < 2 * 1024 * 1024
    before = {p.name for p in _extracted(platform).iterdir()}

    name = tenant_clients.deploy(raw=bomb, wait=False)
    deadline = time.monotonic() + 120
    while (described := tenant_clients.sm.describe_endpoint(EndpointName=name))["EndpointStatus"] == "Creating":
        assert time.monotonic() < deadline
        time.sleep(0.2)

    assert described["EndpointStatus"] == "Failed"
    assert f"unpacks to more than {EXTRACT_CAP_MB} MiB" in described["FailureReason"]
    assert "NEURONDOCK_MAX_MODEL_EXTRACTED_MB" in described["FailureReason"]
    assert {p.name for p in _extracted(platform).iterdir()} == before, "nothing of it was left on disk"


def test_a_replica_is_held_to_its_instance_types_memory_processes_and_files(platform, tenant_clients, probe) -> None:
    # The probe runs on one ml.c5.large (4 GiB, 2 vCPUs): sandbox.limits_for derives its limits.
    expected = limits_for("ml.c5.large", 1, per_uid=os.geteuid() == 0)
    assert expected.memory_bytes == 4 * GIB and expected.open_files == 4096
    within = {"allocate": [["torch", GIB], ["python", GIB // 4]], "open_files": 10_000, "threads": 2_000}
    answer = json.loads(tenant_clients.invoke(probe, json.dumps(within))["Body"].read())

    assert answer["limits"]["RLIMIT_DATA"] == expected.memory_bytes
    assert answer["limits"]["RLIMIT_NOFILE"] == expected.open_files
    # Under the limit memory is there (so a refusal below is the limit's doing, not the host's).
    assert answer["allocated torch"] == GIB and answer["allocated python"] == GIB // 4
    opened, _, error = answer["open_files"].partition(", then ")
    assert error.startswith("OSError: [Errno 24] Too many open files"), answer["open_files"]
    assert expected.open_files - 64 < int(opened.split()[0]) < expected.open_files
    if expected.processes is not None:
        # Root mode: the sandbox's own uid may run this many threads and processes, the replica's included.
        assert answer["limits"]["RLIMIT_NPROC"] == expected.processes
        started, _, error = answer["threads"].partition(", then ")
        assert error == "RuntimeError: can't start new thread", answer["threads"]
        assert expected.processes - 64 < int(started.split()[0]) < expected.processes

    # Past its memory the model's allocation fails with the allocator's own words; the replica lives on.
    for kind, words in (("torch", "DefaultCPUAllocator: can't allocate memory"), ("python", "MemoryError")):
        with pytest.raises(ClientError) as info:
            tenant_clients.invoke(probe, json.dumps({"allocate": [[kind, 5 * GIB]]}))
        error = info.value.response
        assert error["Error"]["Code"] == "ModelError" and words in error["OriginalMessage"], error
        assert "this replica may use 4096 MiB: its share of the instance type's memory" in error["OriginalMessage"]
    answer = json.loads(tenant_clients.invoke(probe, json.dumps({"allocate": [["torch", GIB]]}))["Body"].read())
    assert answer["allocated torch"] == GIB
    ((_, _, _, restarts, state),) = _replicas(platform, probe)
    assert (restarts, state) == (0, "Ready")


def _host_address() -> str | None:
    # The address this host reaches the outside from (no packet is sent); None on a loopback-only host.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if address.startswith("127.") else address


def test_network_isolation_leaves_a_replica_no_network(platform, tenant_clients, probe) -> None:
    listener = socket.create_server(("0.0.0.0", 0), backlog=16)
    port = listener.getsockname()[1]
    accepted: list[str] = []

    def accept() -> None:
        while True:
            try:
                conn, peer = listener.accept()
            except OSError:
                return
            accepted.append(peer[0])
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    # A listener of the test's own on loopback, the API by name, and the listener on the host's address.
    targets = [["127.0.0.1", port], ["localhost", platform.port]]
    if (address := _host_address()) is not None:
        targets.append([address, port])
    ask = json.dumps({"connect": targets})
    try:
        # The probe has the network (the default): every target answers, so the probe itself works.
        answer = json.loads(tenant_clients.invoke(probe, ask)["Body"].read())
        assert [answer[f"{h}:{p}"] for h, p in targets] == ["CONNECTED"] * len(targets), answer
        wait_for(lambda: len(accepted) == len(targets) - 1, 10, what="the listener to count the connections")

        isolated = tenant_clients.deploy({"inference.py": PROBE + ISOLATED}, isolated=True)
        assert tenant_clients.sm.describe_model(ModelName=isolated)["EnableNetworkIsolation"] is True
        answer = json.loads(tenant_clients.invoke(isolated, ask)["Body"].read())
    finally:
        listener.close()
    assert answer["interfaces"] == ["lo"], "only a loopback interface of its own"
    assert answer[f"127.0.0.1:{port}"].startswith("ConnectionRefusedError"), answer
    assert answer[f"localhost:{platform.port}"].startswith("ConnectionRefusedError"), answer
    if address is not None:
        assert "Network is unreachable" in answer[f"{address}:{port}"], answer
    assert len(accepted) == len(targets) - 1, "nothing reached the listener from the isolated replica"


def test_deleting_an_endpoint_deletes_its_unpacked_artifact(platform, tenant_clients, probe, hangs) -> None:
    before = {p for p in _extracted(platform).iterdir()}
    (mine,) = [p for p in before if (p / "code" / "inference.py").read_text() == PROBE]
    tenant_clients.sm.delete_endpoint(EndpointName=probe)

    deadline = time.monotonic() + 60
    while _replicas(platform, probe) or mine.exists():
        assert time.monotonic() < deadline, "the unpacked artifact stayed after the endpoint went"
        time.sleep(0.2)
    assert set(_extracted(platform).iterdir()) == before - {mine}, "the other endpoints' artifacts stay"


# After the deletion test: a failed endpoint's unpacked artifact goes away while that test watches.
@pytest.mark.slow
def test_a_model_that_loads_past_its_memory_fails_to_start_saying_so(platform, tenant_clients) -> None:
    name = tenant_clients.deploy({"inference.py": GREEDY.replace("SIZE", str(5 * GIB))}, wait=False)
    deadline = time.monotonic() + 120
    while (described := tenant_clients.sm.describe_endpoint(EndpointName=name))["EndpointStatus"] == "Creating":
        assert time.monotonic() < deadline
        time.sleep(0.2)

    assert described["EndpointStatus"] == "Failed"
    reason = described["FailureReason"]
    assert "model_fn raised: MemoryError (this replica may use 4096 MiB" in reason, reason
