"""Every operator command against a live platform: deploy (plain and compiled for inf1), list and
describe, invoke, logs (and --follow), neuron-ls, neuron-top, neuron-monitor, accounts, and the exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from tests.support.platform import ACCOUNT_ID
from tests.support.torch_models import tiny_mlp

ENDPOINT = "cli-mlp"
COMPILED = "cli-inf1"
BODY = json.dumps([[0.1 * i for i in range(16)]])


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    import torch

    path = tmp_path_factory.mktemp("models") / "mlp.pt"
    torch.jit.save(tiny_mlp(seed=5), str(path))
    return path


def test_deploy_a_torchscript_file_in_one_command(cli, model_file):
    result = cli("deploy", str(model_file), "--name", ENDPOINT, "--instance-type", "ml.c5.large", "-o", "json")
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


def test_deploy_compiles_for_inf1_when_given_shapes(cli, model_file):
    result = cli(
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
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["status"] == "InService" and out["compilation_job"].startswith(COMPILED)
    assert out["model_data_url"].endswith("-ml_inf1.tar.gz")
    assert "pytorch-inference-neuron" in out["image"]
    assert "Compiling for ml_inf1 (emulated)" in result.stderr


def test_list_and_describe_every_kind(cli):
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
    configs = json.loads(cli("configs", "list", "-o", "json").stdout)
    assert len(configs) == 2
    assert "AllTraffic" in cli("configs", "describe", configs[0]["name"]).stdout
    jobs = json.loads(cli("jobs", "list", "-o", "json").stdout)
    assert len(jobs) == 1 and jobs[0]["status"] == "COMPLETED"
    job = cli("jobs", "describe", jobs[0]["name"]).stdout
    assert "Compile report (emulated)" in job and "projected, not measured on Inferentia" in job
    assert json.loads(cli("jobs", "describe", jobs[0]["name"], "-o", "json").stdout)["report"]["emulated"] is True


def test_invoke_prints_the_answer(cli):
    result = cli("invoke", ENDPOINT, "--body", BODY)
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)[0]) == 4
    assert "variant AllTraffic" in result.stderr
    out = json.loads(cli("invoke", COMPILED, "-o", "json", input=BODY).stdout)
    assert out["invoked_variant"] == "AllTraffic" and len(json.loads(out["body"])[0]) == 4


def test_invoke_exit_codes(cli):
    missing = cli("invoke", "no-such-endpoint", "--body", BODY)
    assert missing.exit_code == 3 and "not found" in missing.stderr
    broken = cli("invoke", ENDPOINT, "--body", "[1, 2]")
    assert broken.exit_code == 1 and "ModelError" in broken.stderr
    assert cli("invoke", ENDPOINT).exit_code == 2  # no body anywhere: a usage error


def test_endpoint_events_and_errors(cli):
    events = json.loads(cli("endpoints", "events", ENDPOINT, "-o", "json").stdout)
    assert [e["status"] for e in events][:2] == ["InService", "Creating"]  # newest first
    assert "Creating" in cli("endpoints", "events", ENDPOINT).stdout
    # test_invoke_exit_codes sent a body the model refused; the data plane flushes it within a second.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        errors = json.loads(cli("endpoints", "errors", ENDPOINT, "-o", "json").stdout)
        if errors:
            break
        time.sleep(0.2)
    assert errors and errors[0]["error_code"] == "ModelError" and errors[0]["http_status"] == 424
    assert errors[0]["request_id"] in cli("endpoints", "errors", ENDPOINT).stdout
    assert cli("endpoints", "events", "no-such-endpoint").exit_code == 3


def test_logs_show_each_replicas_lines(cli):
    result = cli("logs", ENDPOINT, "-n", "2000")
    assert result.exit_code == 0
    assert "[AllTraffic/" in result.stdout and "neurondock replica" in result.stdout
    lines = [json.loads(line) for line in cli("logs", ENDPOINT, "-o", "json").stdout.splitlines()]
    assert lines and {"replica_id", "variant", "line"} <= set(lines[0])


def test_neuron_ls_has_the_real_tools_layout(cli, platform):
    out = cli("neuron-ls").stdout
    assert "instance-type: emulated host" in out and "emulated by neurondock" in out
    assert "| NEURON | NEURON | NEURON | CONNECTED |" in out
    assert f"neurondock-replica {COMPILED}/AllTraffic" in out
    data = json.loads(cli("neuron-ls", "-j", "--host", "host-e2e").stdout)
    assert data["emulated"] and len(data["neuron_devices"]) == 16
    assert len(data["neuron_devices"][0]["neuron_processes"]) == 4  # one replica per NeuronCore


def test_neuron_top_once(cli):
    out = cli("neuron-top", "--once").stdout
    for section in ("NeuronCore Utilization", "VCPU and Memory Info", "Loaded Models", "(emulated)"):
        assert section in out
    assert f"{COMPILED}/AllTraffic" in out and "compile-report estimates" in out
    screens = json.loads(cli("neuron-top", "--once", "-o", "json").stdout)
    assert screens[0]["neuron_cores_in_use"] == 4


def test_neuron_monitor_prints_one_json_report_per_line(cli):
    result = cli("neuron-monitor", "--host", "host-e2e", "--period", "1", "--iterations", "2")
    assert result.exit_code == 0
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(reports) == 2 and all(r["instance_data"]["emulated"] for r in reports)
    runtimes = reports[-1]["neuron_runtime_data"]
    assert len(runtimes) == 4  # the compiled endpoint's four replicas, one NeuronCore each
    assert all(len(r["report"]["neuroncore_counters"]["neuroncores_in_use"]) == 1 for r in runtimes)
    assert cli("neuron-monitor", "--host", "nowhere", "--iterations", "1").exit_code != 0
    # The compiled endpoint answered test_invoke_prints_the_answer: its replica's utilization and
    # device latency are the compile report's projection (the one-second flush has written them).
    assert cli("invoke", COMPILED, "--body", BODY).exit_code == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        report = json.loads(cli("neuron-monitor", "--host", "host-e2e", "--iterations", "1").stdout)
        served = [
            r["report"] for r in report["neuron_runtime_data"]
            if r["report"]["inference_stats"]["inference_summary"]["completed"]
            and r["report"]["neuroncore_counters"]["utilization_source"] == "projected device time"
        ]  # fmt: skip
        if served:
            break
        time.sleep(0.2)
    assert served, report
    assert served[0]["inference_stats"]["latency_stats"]["device_latency"]["p50"] > 0


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


def test_exit_codes_scripts_can_rely_on(cli, platform, model_file):
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


def test_credentials_from_the_data_dir(cli, platform):
    env = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None}
    result = cli("endpoints", "list", "--data-dir", str(platform.data_dir), "-o", "json", env=env)
    assert result.exit_code == 0 and ENDPOINT in {e["name"] for e in json.loads(result.stdout)}


def test_logs_follow_until_the_endpoint_is_deleted(cli_env, platform):
    env = {**os.environ, **cli_env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "neurondock_platform.cli", "logs", ENDPOINT, "--follow", "--interval", "0.3", "-n", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2.0)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        platform.client("sagemaker").delete_endpoint(EndpointName=ENDPOINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert f"endpoint {ENDPOINT} is gone" in err
    assert "[AllTraffic/" in out
