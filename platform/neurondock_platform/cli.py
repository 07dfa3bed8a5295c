"""The ``neurondock`` command: ``up`` runs everything; ``api``, ``worker``, ``agent`` run one piece."""

from __future__ import annotations

import os
import sys

import click

from neurondock_platform.config import DEFAULT_PORT, Settings


def _settings(host: str | None, port: int | None, data_dir: str | None) -> Settings:
    return Settings.from_env(host=host, port=port, data_dir=data_dir)


def _common(fn):  # type: ignore[no-untyped-def]
    fn = click.option("--data-dir", default=None, help="Where state lives (default ~/.neurondock).")(fn)
    fn = click.option("--port", type=int, default=None, help=f"HTTP port (default {DEFAULT_PORT}).")(fn)
    fn = click.option("--host", default=None, help="Bind address (default 127.0.0.1).")(fn)
    return fn


@click.group()
@click.version_option(package_name="neurondock")
def main() -> None:
    """neurondock: SageMaker-compatible endpoints on an emulated AWS Inferentia runtime."""


@main.command()
@_common
def up(host: str | None, port: int | None, data_dir: str | None) -> None:
    """Apply migrations and run the API server, a Celery worker and a host agent."""
    from neurondock_platform.supervisor import run_up

    sys.exit(run_up(_settings(host, port, data_dir)))


@main.command()
@_common
def api(host: str | None, port: int | None, data_dir: str | None) -> None:
    """Run the HTTP server (SageMaker API, runtime, S3 store) in this process."""
    from neurondock_platform.server import serve

    serve(_settings(host, port, data_dir))


def _exec_workers(command: str, settings: Settings) -> None:
    # The platform never imports the workers: it starts them as a program.
    from neurondock_platform.supervisor import child_env

    env = child_env(settings)
    os.execvpe(sys.executable, [sys.executable, "-m", "neurondock_workers", command], env)


@main.command()
@_common
def worker(host: str | None, port: int | None, data_dir: str | None) -> None:
    """Run a Celery worker (compiles and endpoint reconciles)."""
    _exec_workers("worker", _settings(host, port, data_dir))


@main.command()
@_common
def agent(host: str | None, port: int | None, data_dir: str | None) -> None:
    """Run this host's agent, which owns its emulated chips and replica processes."""
    _exec_workers("agent", _settings(host, port, data_dir))


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command()
@click.option("--data-dir", default=None)
@click.option("--revision", default="head")
def upgrade(data_dir: str | None, revision: str) -> None:
    """Apply database migrations."""
    from neurondock_platform.migrate import upgrade as do_upgrade

    settings = _settings(None, None, data_dir)
    do_upgrade(settings, revision)
    click.echo(f"database at {settings.database_url} is at {revision}")


# Operator commands (models, endpoints, deploy, invoke, logs, neuron-ls/top, accounts): see cli_commands.
from neurondock_platform.cli_commands import COMMANDS as _OPERATOR_COMMANDS  # noqa: E402

for _command in _OPERATOR_COMMANDS:
    main.add_command(_command)


if __name__ == "__main__":
    main()


__all__ = ["main"]
