"""Where the sandbox cannot start, only admin accounts run model code, and everyone is told why (issue 11).

The API refuses an ordinary account's deploy and compile from the hosts' reports; the host agent
refuses to start such an account's replica on a host without the sandbox, whatever got past the
API; an admin's model still runs, unsandboxed, saying so in its log; the operator's opt-out lets
everyone run again.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from tests.conftest import sign
from tests.support.identity import new_account
from tests.unit.hosting.test_hosting_agent_states import FakeS3

import neurondock_platform.models as m
from neurondock_platform.config import Settings
from neurondock_platform.db import session_scope, utcnow
from neurondock_platform.models import ReplicaState
from neurondock_workers.hosting.agent import HostAgent, ReplicaProcess
from neurondock_workers.sandbox import MODE_BWRAP, MODE_OFF, MODE_UNAVAILABLE, Sandbox

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"


def _report(session_factory: Any, status: str, host: str = "host-a") -> None:
    with session_scope(session_factory) as session:
        row = session.get(m.Host, host) or m.Host(id=host, address="127.0.0.1", started_at=utcnow())
        row.sandbox, row.last_heartbeat = status, utcnow()
        session.add(row)


def _call(client: Any, keys: Any, operation: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    body = json.dumps(params).encode()
    headers = {"X-Amz-Target": f"SageMaker.{operation}", "Content-Type": "application/x-amz-json-1.1"}
    signed = sign(
        "POST",
        "http://localhost/",
        body=body,
        headers=headers,
        access_key=keys.access_key_id,
        secret_key=keys.secret_access_key,
    )
    resp = client.post("/", data=body, headers=signed)
    return resp.status_code, resp.get_json(force=True, silent=True) or {}


def _endpoint_request(client: Any, keys: Any, name: str) -> tuple[int, dict[str, Any]]:
    container = {"Image": IMAGE, "ModelDataUrl": f"s3://b-{keys.account_id}/m.tar.gz"}
    assert (
        _call(
            client, keys, "CreateModel", {"ModelName": name, "PrimaryContainer": container, "ExecutionRoleArn": ROLE}
        )[0]
        == 200
    )
    variant = {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.c5.large"}
    assert (
        _call(client, keys, "CreateEndpointConfig", {"EndpointConfigName": name, "ProductionVariants": [variant]})[0]
        == 200
    )
    return _call(client, keys, "CreateEndpoint", {"EndpointName": name, "EndpointConfigName": name})


def _compile_request(client: Any, keys: Any, name: str) -> tuple[int, dict[str, Any]]:
    return _call(
        client,
        keys,
        "CreateCompilationJob",
        {
            "CompilationJobName": name,
            "RoleArn": ROLE,
            "InputConfig": {
                "S3Uri": f"s3://b-{keys.account_id}/m.tar.gz",
                "DataInputConfig": '{"x": [1, 4]}',
                "Framework": "PYTORCH",
            },
            "OutputConfig": {"S3OutputLocation": f"s3://b-{keys.account_id}/out", "TargetDevice": "ml_inf1"},
            "StoppingCondition": {"MaxRuntimeInSeconds": 900},
        },
    )


def test_an_ordinary_account_cannot_deploy_or_compile_while_a_host_cannot_sandbox(client, session_factory):
    tenant = new_account(session_factory, "tenant")
    admin = new_account(session_factory, "operator", is_admin=True)
    _report(session_factory, MODE_BWRAP, "host-b")
    _report(session_factory, f"{MODE_UNAVAILABLE}: bwrap is not installed (Debian: bubblewrap)")

    status, error = _endpoint_request(client, tenant, "ep-tenant")
    assert (status, error["__type"]) == (400, "AccessDeniedException")
    assert f"Account {tenant.account_id} cannot deploy an endpoint now" in error["message"]
    assert "host host-a: bwrap is not installed" in error["message"]
    assert "--unsafe-unsandboxed-user-code" in error["message"]
    status, error = _compile_request(client, tenant, "job-tenant")
    assert (status, error["__type"]) == (400, "AccessDeniedException") and "compile a model" in error["message"]

    # The admin may: it is the operator's own code.
    assert _endpoint_request(client, admin, "ep-admin")[0] == 200
    assert _compile_request(client, admin, "job-admin")[0] == 200

    # Once the hosts sandbox again, or the operator opted out, everyone may.
    _report(session_factory, MODE_BWRAP)
    assert _endpoint_request(client, tenant, "ep-tenant-2")[0] == 200
    _report(session_factory, MODE_OFF)
    assert _compile_request(client, tenant, "job-tenant-2")[0] == 200


class _Fake(ReplicaProcess):
    """Records how the agent would start the replica instead of starting it."""

    @classmethod
    def head_start(cls, *args: Any, **kwargs: Any) -> None:
        return None  # no interpreter: start() plays the process

    def start(self, head: Any = None) -> int:
        self.running = True
        return 4242

    @property
    def pid(self) -> int | None:
        return 4242

    def wait_ready(self, timeout: float, cancel: Any = None) -> str | None:
        self.address = "127.0.0.1:1"
        return self.address

    def alive(self) -> bool:
        return getattr(self, "running", False)

    def health(self, timeout: float = 1.0) -> dict[str, Any] | None:
        return {"status": 200}

    def terminate(self, grace: float = 0.0) -> int | None:
        self.running = False
        return 0


def _replica(session_factory: Any, account_id: str, name: str) -> int:
    with session_scope(session_factory) as session:
        endpoint = m.Endpoint(account_id=account_id, name=name, arn=f"arn:{name}", endpoint_config_name=name)
        session.add(endpoint)
        session.flush()
        variant = m.EndpointVariant(
            endpoint_id=endpoint.id,
            name="AllTraffic",
            model_name=name,
            container={"ModelDataUrl": "s3://b/m.tar.gz"},
            instance_type="ml.c5.large",
        )
        session.add(variant)
        session.flush()
        replica = m.Replica(endpoint_id=endpoint.id, variant_id=variant.id, host_id="host-a")
        session.add(replica)
        session.flush()
        return replica.id


def test_the_agent_runs_only_admin_model_code_without_a_sandbox(settings: Settings, session_factory):
    tenant = new_account(session_factory, "tenant")
    admin = new_account(session_factory, "operator", is_admin=True)
    settings = settings.with_overrides(host_id="host-a")
    broken = Sandbox(MODE_UNAVAILABLE, "bwrap is not installed (Debian: bubblewrap)")
    agent = HostAgent(settings, session_factory, FakeS3, process_cls=_Fake, sandbox=broken, stop_grace=0.1)
    agent.heartbeat()
    tenant_rid = _replica(session_factory, tenant.account_id, "tenant-ep")
    admin_rid = _replica(session_factory, admin.account_id, "admin-ep")
    try:
        deadline = time.monotonic() + 10
        while True:
            agent.step()
            with session_factory() as session:
                states = {rid: session.get(m.Replica, rid) for rid in (tenant_rid, admin_rid)}
                if states[tenant_rid].state == ReplicaState.FAILED and states[admin_rid].state == ReplicaState.READY:
                    break
            assert time.monotonic() < deadline, {k: (v.state, v.failure_reason) for k, v in states.items()}
            time.sleep(0.01)
        with session_factory() as session:
            host = session.get(m.Host, "host-a")
            assert host is not None and host.sandbox == "unavailable: bwrap is not installed (Debian: bubblewrap)"
        reason = states[tenant_rid].failure_reason or ""
        assert "The sandbox for model code cannot start on host host-a" in reason
        assert "only admin accounts may run model code outside it" in reason
        admin_log = (settings.replicas_dir / str(admin_rid) / "replica.log").read_text()
        assert "running unsandboxed: the sandbox is unavailable (bwrap is not installed" in admin_log
    finally:
        agent.shutdown(timeout=5)


def _visible(html: str) -> str:
    # The page's text as a reader sees it: tags (and with them title attributes) removed.
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_the_console_shows_the_sandbox_mode_and_why_it_is_not_on(client, session_factory):
    from tests.integration.admin.test_console_pages import sign_in

    tenant = new_account(session_factory, "tenant")
    assert sign_in(client, tenant.access_key_id, tenant.secret_access_key).status_code == 302

    def page(path: str = "/console/endpoints") -> str:
        resp = client.get(path)
        assert resp.status_code == 200
        return _visible(resp.get_data(as_text=True))

    assert "sandbox: unknown" in page()
    _report(session_factory, MODE_BWRAP)
    text = page()
    assert "sandbox: on" in text and "unsandboxed" not in text and "unavailable" not in text
    assert "s ago · sandbox bwrap" in page("/console/fleet")

    why = "bwrap is not installed (Debian: bubblewrap)"
    _report(session_factory, f"{MODE_UNAVAILABLE}: {why}")
    text = page()
    assert "sandbox: unavailable" in text
    assert f"host host-a: {why}" in text, "the reason is on the page, not only in a tooltip"
    assert "only admin accounts can deploy or compile" in text
    assert f"s ago · sandbox unavailable: {why}" in page("/console/fleet")

    _report(session_factory, MODE_OFF)
    text = page("/console/models")
    assert "sandbox: OFF (unsafe)" in text
    assert "--unsafe-unsandboxed-user-code" in text and "as the platform's own user" in text
