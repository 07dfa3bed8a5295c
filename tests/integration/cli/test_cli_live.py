"""Every operator command against a live platform: deploy (plain and compiled for inf1), list and
describe, invoke, logs (and --follow), neuron-ls, neuron-top, neuron-monitor, accounts, and the exit codes.

The two endpoints are module fixtures, so any test runs alone or in any order; only the --follow test
deletes an endpoint, one of its own."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading

import pytest
from tests.support.platform import ACCOUNT_ID
from tests.support.torch_models import tiny_mlp
from tests.support.waiting import wait_for

ENDPOINT = "cli-mlp"
COMPILED = "cli-inf1"
BODY = json.dumps([[0.1 * i for i in range(16)]])


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    import torch

    path = tmp_path_factory.mktemp("models") / "mlp.pt"
    torch.jit.save(tiny_mlp(seed=5), str(path))
    return path


@pytest.fixture(scope="module")
def deployed(cli, model_file):
    """``neurondock deploy`` of a TorchScript file to ml.c5.large: the result of the command."""
    return cli("deploy", str(model_file), "--name", ENDPOINT, "--instance-type", "ml.c5.large", "-o", "json")


@pytest.fixture(scope="module")
def compiled(cli, model_file):
    """``neurondock deploy`` of the same file compiled for ml.inf1.xlarge: the result of the command."""
    return cli(
        "deploy",
        str(model_file),
        "--name",
        COMPILED,
        "--instance-type",
        "ml.inf1.xlarge",
        "--input-shape",
        "input0:1,16",
        "-o",
        "json",
    )


def test_deploy_a_torchscript_file_in_one_command(deployed):
    result = deployed
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["status"] == "InService" and out["compilation_job"] is None
    assert out["model_data_url"] == f"s3://nd-artifacts-{ACCOUNT_ID}/deploy/{ENDPOINT}/model.tar.gz"
    assert "Uploaded" in result.stderr and "InService" in result.stderr


def test_deploy_refuses_a_file_that_is_not_torchscript(cli, tmp_path):
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"not a zip archive")
    result = cli("deploy", str(bad), "--name", "never")
    assert result.exit_code == 1 and "not TorchScript" in result.stderr


def test_deploy_compiles_for_inf1_when_given_shapes(compiled):
    result = compiled
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["status"] == "InService" and out["compilation_job"].startswith(COMPILED)
    assert out["model_data_url"].endswith("-ml_inf1.tar.gz")
    assert "pytorch-inference-neuron" in out["image"]
    assert "Compiling for ml_inf1 (emulated)" in result.stderr


def test_list_and_describe_every_kind(cli, deployed, compiled):
    table = cli("endpoints", "list").stdout
    assert "NAME" in table and ENDPOINT in table and "InService" in table
    listed = json.loads(cli("endpoints", "list", "-o", "json", "--name-contains", "MLP").stdout)
    assert [e["name"] for e in listed] == [ENDPOINT]
    detail = cli("endpoints", "describe", COMPILED).stdout
    assert "Replicas" in detail and "(reported)" in detail and "ml.inf1.xlarge" in detail
    described = json.loads(cli("endpoints", "describe", ENDPOINT, "-o", "json").stdout)
    assert described["variants"][0]["replicas"][0]["state"] == "Ready" and described["cost"]["usd_per_hour"] == 0.085
    assert ENDPOINT in cli("models", "list").stdout
    assert json.loads(cli("models", "describe", ENDPOINT, "-o", "json").stdout)["name"] == ENDPOINT
    configs = [c["name"] for c in json.loads(cli("configs", "list", "-o", "json").stdout)]
    ours = [n for n in configs if n.startswith((f"{ENDPOINT}-", f"{COMPILED}-"))]
    assert len(ours) == 2 and {n.startswith(f"{COMPILED}-") for n in ours} == {True, False}
    assert "AllTraffic" in cli("configs", "describe", ours[0]).stdout
    jobs = [j for j in json.loads(cli("jobs", "list", "-o", "json").stdout) if j["name"].startswith(COMPILED)]
    assert len(jobs) == 1 and jobs[0]["status"] == "COMPLETED"
    job = cli("jobs", "describe", jobs[0]["name"]).stdout
    assert "Compile report (emulated)" in job and "projected, not measured on Inferentia" in job
    assert json.loads(cli("jobs", "describe", jobs[0]["name"], "-o", "json").stdout)["report"]["emulated"] is True


def test_invoke_prints_the_answer(cli, deployed, compiled):
    result = cli("invoke", ENDPOINT, "--body", BODY)
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)[0]) == 4
    assert "variant AllTraffic" in result.stderr
    out = json.loads(cli("invoke", COMPILED, "-o", "json", input=BODY).stdout)
    assert out["invoked_variant"] == "AllTraffic" and len(json.loads(out["body"])[0]) == 4


def test_invoke_exit_codes(cli, deployed):
    missing = cli("invoke", "no-such-endpoint", "--body", BODY)
    assert missing.exit_code == 3 and "not found" in missing.stderr
    broken = cli("invoke", ENDPOINT, "--body", "[1, 2]")
    assert broken.exit_code == 1 and "ModelError" in broken.stderr
    assert cli("invoke", ENDPOINT).exit_code == 2  # no body anywhere: a usage error


def test_endpoint_events_and_errors(cli, deployed):
    events = json.loads(cli("endpoints", "events", ENDPOINT, "-o", "json").stdout)
    assert [e["status"] for e in events][:2] == ["InService", "Creating"]  # newest first
    assert "Creating" in cli("endpoints", "events", ENDPOINT).stdout
    # A body the model refuses; the data plane flushes the failed invocation within a second.
    assert cli("invoke", ENDPOINT, "--body", "[1, 2]").exit_code == 1
    errors = wait_for(
        lambda: json.loads(cli("endpoints", "errors", ENDPOINT, "-o", "json").stdout),
        30,
        what="the refused invocation to be recorded",
        interval=0.2,
    )
    assert errors[0]["error_code"] == "ModelError" and errors[0]["http_status"] == 424
    assert errors[0]["request_id"] in cli("endpoints", "errors", ENDPOINT).stdout
    assert cli("endpoints", "events", "no-such-endpoint").exit_code == 3


def test_logs_show_each_replicas_lines(cli, deployed):
    result = cli("logs", ENDPOINT, "-n", "2000")
    assert result.exit_code == 0
    assert "[AllTraffic/" in result.stdout and "neurondock replica" in result.stdout
    lines = [json.loads(line) for line in cli("logs", ENDPOINT, "-o", "json").stdout.splitlines()]
    assert lines and {"replica_id", "variant", "line"} <= set(lines[0])


def test_neuron_ls_has_the_real_tools_layout(cli, compiled):
    out = cli("neuron-ls").stdout
    assert "instance-type: emulated host" in out and "emulated by neurondock" in out
    assert "| NEURON | NEURON | NEURON | CONNECTED |" in out
    assert f"neurondock-replica {COMPILED}/AllTraffic" in out
    data = json.loads(cli("neuron-ls", "-j", "--host", "host-e2e").stdout)
    assert data["emulated"] and len(data["neuron_devices"]) == 16
    assert len(data["neuron_devices"][0]["neuron_processes"]) == 4  # one replica per NeuronCore


def test_neuron_top_once(cli, compiled):
    out = cli("neuron-top", "--once").stdout
    for section in ("NeuronCore Utilization", "VCPU and Memory Info", "Loaded Models", "(emulated)"):
        assert section in out
    assert f"{COMPILED}/AllTraffic" in out and "compile-report estimates" in out
    screens = json.loads(cli("neuron-top", "--once", "-o", "json").stdout)
    assert screens[0]["neuron_cores_in_use"] == 4


def test_neuron_monitor_prints_one_json_report_per_line(cli, compiled):
    result = cli("neuron-monitor", "--host", "host-e2e", "--period", "1", "--iterations", "2")
    assert result.exit_code == 0
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(reports) == 2 and all(r["instance_data"]["emulated"] for r in reports)
    runtimes = reports[-1]["neuron_runtime_data"]
    assert len(runtimes) == 4  # the compiled endpoint's four replicas, one NeuronCore each
    assert all(len(r["report"]["neuroncore_counters"]["neuroncores_in_use"]) == 1 for r in runtimes)
    assert cli("neuron-monitor", "--host", "nowhere", "--iterations", "1").exit_code != 0
    # Once the compiled endpoint has answered, its replica's utilization and device latency are the
    # compile report's projection (after the one-second metrics flush).
    assert cli("invoke", COMPILED, "--body", BODY).exit_code == 0

    def served() -> list[dict]:
        report = json.loads(cli("neuron-monitor", "--host", "host-e2e", "--iterations", "1").stdout)
        return [
            r["report"] for r in report["neuron_runtime_data"]
            if r["report"]["inference_stats"]["inference_summary"]["completed"]
            and r["report"]["neuroncore_counters"]["utilization_source"] == "projected device time"
        ]  # fmt: skip

    reports = wait_for(served, 30, what="a served replica's projected figures", interval=0.2)
    assert reports[0]["inference_stats"]["latency_stats"]["device_latency"]["p50"] > 0


def test_accounts_as_admin_and_as_a_tenant(cli):
    created = json.loads(cli("accounts", "create", "cli-team", "-o", "json").stdout)
    key, secret = created["access_key"]["access_key_id"], created["access_key"]["secret_access_key"]
    assert "cli-team" in cli("accounts", "list").stdout
    assert key in cli("accounts", "keys", created["account"]["id"]).stdout
    as_tenant = {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
    denied = cli("accounts", "list", env=as_tenant)
    assert denied.exit_code == 4 and "admin" in denied.stderr
    assert json.loads(cli("endpoints", "list", "-o", "json", env=as_tenant).stdout) == []
    assert cli("accounts", "disable", key).stdout.strip() == f"{key}: Inactive"
    assert cli("endpoints", "list", env=as_tenant).exit_code == 4
    assert cli("accounts", "enable", key).exit_code == 0
    rotated = json.loads(cli("accounts", "rotate", key, "-o", "json").stdout)
    assert rotated["replaced"]["status"] == "Inactive"
    assert json.loads(cli("accounts", "add-key", created["account"]["id"], "-o", "json").stdout)["status"] == "Active"


def test_exit_codes_scripts_can_rely_on(cli, model_file):
    assert cli("endpoints", "describe", "nope").exit_code == 3
    unreachable = cli("endpoints", "list", "--endpoint-url", "http://127.0.0.1:9")
    assert unreachable.exit_code == 5 and "Cannot reach neurondock" in unreachable.stderr
    assert cli("endpoints", "list", env={"AWS_SECRET_ACCESS_KEY": "wrong"}).exit_code == 4
    assert cli("endpoints", "list", "--output", "yaml").exit_code == 2
    # A compile cannot finish within 10 ms (a worker must pick it up first); an endpoint start can,
    # with the runtime's warm standby processes.
    slow = cli(
        "deploy",
        str(model_file),
        "--name",
        "cli-slow",
        "--instance-type",
        "ml.inf1.xlarge",
        "--input-shape",
        "input0:1,16",
        "--timeout",
        "0.01",
    )
    assert slow.exit_code == 6 and "is still" in slow.stderr


def test_credentials_from_the_data_dir(cli, platform, deployed):
    env = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None}
    result = cli("endpoints", "list", "--data-dir", str(platform.data_dir), "-o", "json", env=env)
    assert result.exit_code == 0 and ENDPOINT in {e["name"] for e in json.loads(result.stdout)}


def test_logs_follow_until_the_endpoint_is_deleted(cli, cli_env, platform, model_file):
    name = "cli-follow"
    assert cli("deploy", str(model_file), "--name", name, "--instance-type", "ml.c5.large").exit_code == 0
    env = {**os.environ, **cli_env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "neurondock_platform.cli", "logs", name, "--follow", "--interval", "0.3", "-n", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None

    def pump(stream) -> None:
        for line in stream:
            lines.put(line)

    reader = threading.Thread(target=pump, args=(proc.stdout,), daemon=True)
    reader.start()
    try:
        # Following has begun once the last line of the log (-n 1) is out; only then delete.
        first = wait_for(lambda: not lines.empty() and lines.get(), 30, what="`logs --follow` to print its first line")
        assert proc.poll() is None
        platform.client("sagemaker").delete_endpoint(EndpointName=name)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=5)
    err = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == 0, err
    assert f"endpoint {name} is gone" in err
    assert first.startswith("[AllTraffic/")
