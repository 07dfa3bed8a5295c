"""Operator commands of the ``neurondock`` CLI, talking to a running neurondock over HTTP.

``models|configs|endpoints|jobs list|describe``, ``endpoints autoscale|scaling``, ``deploy``, ``invoke``,
``logs``, ``neuron-ls``, ``neuron-top`` and ``accounts``. Every command takes ``--endpoint-url``,
``--data-dir``, ``--region`` and ``--output table|json``. SageMaker, Application Auto Scaling and
CloudWatch calls use boto3; the rest uses the admin API (``/api/v1``).
Nothing here imports torch.

Exit codes: 0 ok · 1 the operation failed · 2 usage error · 3 not found · 4 not authenticated or not
allowed · 5 neurondock cannot be reached · 6 timed out waiting.
"""

from __future__ import annotations

import click

from neurondock_platform.cli_commands import accounts, autoscale, deploy, invoke, neuron, resources

EXIT_CODES = (
    "Exit codes: 0 ok, 1 the operation failed, 2 usage error, 3 not found, 4 not authenticated or not allowed, "
    "5 neurondock cannot be reached, 6 timed out waiting."
)

# ``autoscale`` adds its commands to the ``endpoints`` group.
del autoscale

COMMANDS: list[click.Command] = [
    *resources.COMMANDS,
    *deploy.COMMANDS,
    *invoke.COMMANDS,
    *neuron.COMMANDS,
    *accounts.COMMANDS,
]


def _document_exit_codes(command: click.Command) -> None:
    command.epilog = command.epilog or EXIT_CODES
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _document_exit_codes(sub)


for _command in COMMANDS:
    _document_exit_codes(_command)

__all__ = ["COMMANDS"]
