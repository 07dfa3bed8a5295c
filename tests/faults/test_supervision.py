"""Process supervision as a new user meets it: `neurondock up` killed with SIGKILL, run twice, and stopped
the way a container runtime stops it (SIGTERM, then SIGKILL after 10 s)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.e2e.test_walking_skeleton import deploy
from tests.support.platform import Platform
from tests.support.processes import descendants, open_files, wait_gone
from tests.support.torch_models import tiny_mlp
from tests.support.waiting import wait_for

# Docker's default: `docker stop` sends SIGTERM, waits this long, then SIGKILLs the container.
DOCKER_STOP_TIMEOUT = 10.0
BODY = json.dumps([[0.25] * 16])
# A model whose predict_fn sleeps as long as the request asks: an invocation still in flight at stop time.
SLOW_HANDLER = (
    "import json, time\n"
    "def model_fn(model_dir):\n"
    "    return None\n"
    "def input_fn(body, content_type):\n"
    "    return json.loads(body)\n"
    "def predict_fn(data, model):\n"
    "    print('slow request started', flush=True)\n"
    "    time.sleep(float(data['sleep']))\n"
    "    return data\n"
    "def output_fn(data, accept):\n"
    "    return json.dumps(data), 'application/json'\n"
)


def _platform(tmp_path) -> Platform:
    # One standby interpreter, kept while the replica serves: enough to see that a waiting standby dies
    # with its agent too.
    return Platform(
        tmp_path / "nd",
        extra_env={"NEURONDOCK_STANDBY_POOL_SIZE": "1", "NEURONDOCK_STANDBY_WHILE_SERVING": "1"},
    )


def _replica_rows(plat: Platform) -> list[tuple[int, int | None, str]]:
    engine = create_engine(f"sqlite:///{plat.data_dir / 'neurondock.db'}")
    with engine.connect() as conn:
        rows = conn.execute(text("select id, pid, state from replicas where desired_state = 'running'")).all()
    engine.dispose()
    return [(r[0], r[1], r[2]) for r in rows]


def _up(plat: Platform, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "neurondock_platform.cli", *args],
        env=plat.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _tree_with_a_standby(up_pid: int) -> dict[int, str]:
    def tree() -> dict[int, str] | None:
        found = descendants(up_pid)
        return found if any("hosting.standby" in cmd for cmd in found.values()) else None

    return wait_for(tree, 60, what="a standby process under `up`", interval=0.1, state=lambda: descendants(up_pid))


@pytest.fixture
def plat(tmp_path):
    plat = _platform(tmp_path)
    yield plat
    plat.stop()
    _up(plat, "down", "--data-dir", str(plat.data_dir))


def test_sigkilled_up_takes_every_process_along_and_the_next_up_serves(plat, tmp_path):
    plat.start()
    assert plat.process is not None
    # `up` lives as long as the platform: its migrations ran in a child, so no SQLAlchemy stays in its memory.
    assert "sqlalchemy" not in Path(f"/proc/{plat.process.pid}/maps").read_text()
    sm, rt, s3 = plat.client("sagemaker"), plat.client("sagemaker-runtime"), plat.client("s3")
    s3.create_bucket(Bucket="sup")
    name = deploy(sm, s3, "sup", tmp_path, tiny_mlp(seed=3))
    assert rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Body=BODY)["Body"].read()
    assert plat.process is not None
    tree = _tree_with_a_standby(plat.process.pid)
    replica_pids = {pid for _, pid, _ in _replica_rows(plat) if pid}
    assert replica_pids and replica_pids <= set(tree), (replica_pids, tree)
    roles = " ".join(tree.values())
    for role in ("cli api", "neurondock_workers host"):
        assert role in roles, tree

    # The OOM killer, or a runtime's stop timeout: no chance to clean up.
    plat.process.kill()
    plat.process.wait()
    survivors = wait_gone(list(tree), timeout=20)
    assert survivors == [], {p: tree[p] for p in survivors}

    # Same data dir, same port: the next `up` starts (that it serves what it left behind is
    # tests/e2e/test_walking_skeleton.py::test_restart_brings_endpoints_back).
    plat.start()
    assert plat.ping()
    assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"


def test_a_second_up_reports_the_running_or_stale_instance(plat):
    plat.start()
    assert plat.process is not None
    up_pid = plat.process.pid
    second = _up(plat, "up")
    assert second.returncode == 1
    assert f"already running on {plat.data_dir} (pid {up_pid}, {plat.url})" in second.stderr, second.stderr

    # A child that cannot act on its SIGTERM (stopped) outlives its killed supervisor and keeps the port.
    tree = descendants(up_pid)
    api = next(pid for pid, cmd in tree.items() if cmd.endswith("cli api"))
    os.kill(api, signal.SIGSTOP)
    plat.process.kill()
    plat.process.wait()
    plat.process = None
    assert wait_gone([p for p in tree if p != api], timeout=20) == []

    third = _up(plat, "up")
    assert third.returncode == 1
    assert f"a stale instance holds {plat.data_dir}: its neurondock up (pid {up_pid}) is gone" in third.stderr
    assert f"{api} (" in third.stderr and "neurondock down --data-dir" in third.stderr, third.stderr

    down = _up(plat, "down", "--data-dir", str(plat.data_dir))
    assert down.returncode == 0, down.stderr
    assert wait_gone([api], timeout=5) == []
    plat.start()
    assert plat.ping()


def test_after_the_banner_a_lean_watch_restarts_a_child_that_exits_as_it_started(plat):
    plat.start()
    assert plat.process is not None
    up_pid = plat.process.pid

    # The same pid, now the watch: the command line's imports (click, the settings) stayed behind. `up`
    # execs it after printing the banner, so the test may look mid-exec (an empty command line).
    def command() -> list[bytes]:
        return Path(f"/proc/{up_pid}/cmdline").read_bytes().split(b"\0")

    wait_for(lambda: b"neurondock_platform.watch" in command(), 10, what="up to exec the watch", state=command)
    tree = descendants(up_pid)
    api = next(pid for pid, cmd in tree.items() if cmd.endswith("cli api"))
    host = next(pid for pid, cmd in tree.items() if cmd.endswith("neurondock_workers host"))

    os.kill(api, signal.SIGKILL)
    again = wait_for(
        lambda: next((p for p, c in descendants(up_pid).items() if c.endswith("cli api") and p != api), None),
        30,
        what="the API restarted",
    )
    wait_for(plat.ping, 60, what="the restarted API to answer")
    # As it started: the root keys (the API's alone), the instance lock, the same log.
    environ = Path(f"/proc/{again}/environ").read_bytes()
    assert b"NEURONDOCK_ROOT_SECRET_ACCESS_KEY=" in environ
    assert b"NEURONDOCK_ROOT_SECRET_ACCESS_KEY=" not in Path(f"/proc/{host}/environ").read_bytes()
    lock = str((plat.data_dir / "instance.lock").resolve())
    assert lock in open_files(again)
    assert host in descendants(up_pid)  # the other child was left alone


def test_up_says_why_it_cannot_prepare_the_database(plat, tmp_path):
    plat.database_url = f"sqlite:///{tmp_path / 'no-such-dir' / 'neurondock.db'}"
    failed = _up(plat, "up")
    assert failed.returncode == 1
    assert "neurondock: could not prepare the database:" in failed.stderr, failed.stderr
    assert "unable to open database file" in failed.stderr, failed.stderr
    assert not plat.ping()


def test_sigterm_stops_everything_within_a_container_stop_timeout(plat, tmp_path):
    plat.start()
    sm, rt, s3 = plat.client("sagemaker"), plat.client("sagemaker-runtime"), plat.client("s3")
    s3.create_bucket(Bucket="sup")
    name = deploy(sm, s3, "sup", tmp_path, code={"inference.py": SLOW_HANDLER})
    assert plat.process is not None
    tree = _tree_with_a_standby(plat.process.pid)
    # An invocation that would run for a minute is in flight when the stop comes.
    slow = threading.Thread(
        target=lambda: _swallow(
            rt.invoke_endpoint, EndpointName=name, ContentType="application/json", Body=json.dumps({"sleep": 60})
        ),
        daemon=True,
    )
    slow.start()
    (replica_id, _, _), *_ = _replica_rows(plat)
    log = plat.data_dir / "replicas" / str(replica_id) / "replica.log"
    wait_for(
        lambda: "slow request started" in (log.read_text() if log.exists() else ""),
        30,
        what="the slow request to reach the replica",
        state=plat.logs,
    )

    started = time.monotonic()
    plat.process.send_signal(signal.SIGTERM)
    code = plat.process.wait(DOCKER_STOP_TIMEOUT)
    survivors = wait_gone(list(tree), timeout=max(0.0, DOCKER_STOP_TIMEOUT - (time.monotonic() - started)))
    took = time.monotonic() - started
    assert survivors == [], {p: tree[p] for p in survivors}
    assert code == 0
    print(f"SIGTERM to every process gone: {took:.2f} s (Docker's stop timeout: {DOCKER_STOP_TIMEOUT:.0f} s)")
    plat.process = None
    # The agent finished its own shutdown (not killed by the supervisor): it handed its replicas back.
    assert {state for _, _, state in _replica_rows(plat)} == {"Pending"}


def _swallow(fn, **kwargs):
    with contextlib.suppress(Exception):  # the stop ends it one way or another
        fn(**kwargs)
