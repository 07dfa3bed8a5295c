"""The ``neurondock`` command: ``up`` runs everything; ``api``, ``host``, ``store`` (and more) run one piece."""

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


class _Main(click.Group):
    """The top group: the platform's own commands, and the operator commands loaded on first mention.

    ``up``, ``host`` and ``api`` live as long as the platform: the operator commands (cli_commands) bring
    an HTTP client (urllib, http.client, ssl, email) those processes would hold for nothing
    (docs/measured.md, "Memory by process").
    """

    _operator_commands_added = False

    def _add_operator_commands(self) -> None:
        if not self._operator_commands_added:
            from neurondock_platform.cli_commands import COMMANDS

            for command in COMMANDS:
                self.add_command(command)
            self._operator_commands_added = True

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and not self._operator_commands_added:
            self._add_operator_commands()
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_operator_commands()
        return super().list_commands(ctx)


@click.group(cls=_Main)
@click.version_option(package_name="neurondock")
def main() -> None:
    """neurondock: SageMaker-compatible endpoints on an emulated AWS Inferentia runtime."""


@main.command()
@_common
@click.option(
    "--unsafe-unsandboxed-user-code",
    "unsafe",
    is_flag=True,
    default=None,
    help="Run every account's model code without the bubblewrap sandbox, as this platform's own user, able "
    "to read its credentials and every account's data (NEURONDOCK_UNSAFE_UNSANDBOXED_USER_CODE=1).",
)
def up(host: str | None, port: int | None, data_dir: str | None, unsafe: bool | None) -> None:
    """Apply migrations and run the API server, a Celery worker and a host agent."""
    from neurondock_platform.supervisor import run_up

    settings = _settings(host, port, data_dir)
    if unsafe:
        settings = settings.with_overrides(unsafe_unsandboxed_user_code=True)
    sys.exit(run_up(settings))


@main.command()
@_common
def host(host: str | None, port: int | None, data_dir: str | None) -> None:
    """Run a worker host: a Celery worker and this host's agent, supervised like ``up`` runs them."""
    from neurondock_platform.supervisor import run_host

    sys.exit(run_host(_settings(host, port, data_dir)))


@main.command()
@click.option("--data-dir", default=None, help="The data dir of the instance to stop (default ~/.neurondock).")
@click.option("--timeout", type=float, default=15.0, show_default=True, help="Seconds before SIGKILL.")
def down(data_dir: str | None, timeout: float) -> None:
    """Stop the instance running on a data dir, or the stale processes of one that was killed."""
    from neurondock_platform.supervisor import run_down

    sys.exit(run_down(_settings(None, None, data_dir).data_dir, timeout))


@main.command()
@_common
def store(host: str | None, port: int | None, data_dir: str | None) -> None:
    """Run the embedded S3-compatible store on its own, for API processes and hosts to share."""
    from neurondock_platform.store import serve_store

    serve_store(_settings(host, port, data_dir))


@main.command()
@_common
def api(host: str | None, port: int | None, data_dir: str | None) -> None:
    """Run the HTTP server (SageMaker API, runtime, S3 store) in this process."""
    from neurondock_platform import database_gate, heap, optional_imports

    heap.limit_arenas()  # before the server's threads start
    # No heap.fix_thresholds() here: the API's invocation bodies (602 KB for a ResNet-18 image) would
    # each be mapped and faulted in anew: ~680 page faults and three times the API's CPU per request.
    optional_imports.refuse(api=True)  # before any library looks for them
    settings, preparing = _settings(host, port, data_dir), None
    prepare = database_gate.take(database_gate.PREPARE_ENV)
    if prepare is not None:
        from neurondock_platform.migrate import prepare_in_fork

        # Before the rest of the API's imports, which the fork then does not wait for (one thread yet).
        preparing = prepare_in_fork(settings, prepare)
    from neurondock_platform.server import serve

    serve(settings, gate=database_gate.take(), preparing=preparing)


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
    """Apply database migrations (and, at head, make sure the root account exists)."""
    from neurondock_platform.migrate import prepare_database
    from neurondock_platform.migrate import upgrade as do_upgrade

    settings = _settings(None, None, data_dir)
    if revision == "head":
        prepare_database(settings)
    else:
        do_upgrade(settings, revision)
    click.echo(f"database at {settings.database_url} is at {revision}")


if __name__ == "__main__":
    main()


__all__ = ["main"]
