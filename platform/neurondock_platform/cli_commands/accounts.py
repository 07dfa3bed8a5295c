"""``neurondock accounts``: accounts and access keys (admin accounts only)."""

from __future__ import annotations

import click

from neurondock_platform.cli_commands._client import Connection
from neurondock_platform.cli_commands._output import connection_options, emit_json, facts, table


@click.group()
def accounts() -> None:
    """Accounts and access keys (admin only): list, create, add keys, disable, enable, rotate, store access."""


@accounts.command("list")
@connection_options
def list_accounts(conn: Connection, output: str) -> None:
    """List accounts."""
    items = list(conn.admin().pages("/accounts"))
    if output == "json":
        emit_json(items)
        return
    click.echo(
        table(["id", "name", "admin", "created"], [[a["id"], a["name"], a["is_admin"], a["created_at"]] for a in items])
    )


@accounts.command("create")
@click.argument("name")
@click.option("--admin", "is_admin", is_flag=True, help="Make it an admin account.")
@connection_options
def create_account(conn: Connection, output: str, name: str, is_admin: bool) -> None:
    """Create an account with one access key (the secret is printed once)."""
    created = conn.admin().post("/accounts", {"name": name, "is_admin": is_admin})
    if output == "json":
        emit_json(created)
        return
    key = created["access_key"]
    click.echo(
        facts(
            [
                ("Account", f"{created['account']['id']} ({created['account']['name']})"),
                ("Access key", key["access_key_id"]),
                ("Secret key", key["secret_access_key"]),
            ]
        )
    )
    click.echo("Save the secret now: it is not shown again.", err=True)


@accounts.command("keys")
@click.argument("account_id", required=False)
@connection_options
def list_keys(conn: Connection, output: str, account_id: str | None) -> None:
    """List the access keys of ACCOUNT_ID (or of every account)."""
    path = f"/accounts/{account_id}/access-keys" if account_id else "/access-keys"
    items = list(conn.admin().pages(path))
    if output == "json":
        emit_json(items)
        return
    rows = [[k["access_key_id"], k["account_id"], k["status"], k["created_at"]] for k in items]
    click.echo(table(["access key", "account", "status", "created"], rows))


@accounts.command("add-key")
@click.argument("account_id")
@connection_options
def add_key(conn: Connection, output: str, account_id: str) -> None:
    """Add an access key to ACCOUNT_ID (the secret is printed once)."""
    key = conn.admin().post(f"/accounts/{account_id}/access-keys")
    if output == "json":
        emit_json(key)
        return
    click.echo(facts([("Access key", key["access_key_id"]), ("Secret key", key["secret_access_key"])]))


def _key_action(action: str, help_text: str) -> click.Command:
    @click.command(action, help=help_text)
    @click.argument("access_key_id")
    @connection_options
    def command(conn: Connection, output: str, access_key_id: str) -> None:
        result = conn.admin().post(f"/access-keys/{access_key_id}/{action}")
        if output == "json":
            emit_json(result)
            return
        if action == "rotate":
            new = result["access_key"]
            click.echo(
                facts(
                    [
                        ("Disabled", result["replaced"]["access_key_id"]),
                        ("New access key", new["access_key_id"]),
                        ("New secret key", new["secret_access_key"]),
                    ]
                )
            )
        else:
            click.echo(f"{result['access_key_id']}: {result['status']}")

    return command


@accounts.command("store-access")
@click.argument("account_id")
@click.option("--access-key-id", default=None, help="The account's own key for the external S3 store.")
@click.option(
    "--secret-access-key",
    default=None,
    envvar="NEURONDOCK_STORE_SECRET_ACCESS_KEY",
    help="Its secret (prompted for when only --access-key-id is given; or $NEURONDOCK_STORE_SECRET_ACCESS_KEY).",
)
@click.option("--bucket", "buckets", multiple=True, help="A bucket the operator maps to the account (repeatable).")
@click.option("--clear", is_flag=True, help="Remove the account's store credentials and mapped buckets.")
@connection_options
def store_access(
    conn: Connection,
    output: str,
    account_id: str,
    access_key_id: str | None,
    secret_access_key: str | None,
    buckets: tuple[str, ...],
    clear: bool,
) -> None:
    """Show or set what ACCOUNT_ID reaches in an external S3 store (NEURONDOCK_S3_ENDPOINT_URL).

    Setting replaces both parts: the account's own store credentials (the platform then reads and writes
    for it with those keys only) and the buckets mapped to it (reached with the platform's external key).
    """
    path = f"/accounts/{account_id}/store-access"
    if clear:
        result = conn.admin().request("DELETE", path)
    elif access_key_id or buckets:
        if access_key_id and not secret_access_key:
            secret_access_key = click.prompt("Secret access key", hide_input=True)
        body = {"access_key_id": access_key_id, "secret_access_key": secret_access_key, "buckets": list(buckets)}
        result = conn.admin().request("PUT", path, json_body=body)
    else:
        result = conn.admin().get(path)
    if output == "json":
        emit_json(result)
        return
    click.echo(
        facts(
            [
                ("Account", result["account_id"]),
                ("Store", f"{result['store']}" + ("" if result["in_effect"] else " (store access is not used)")),
                ("Store credentials", result["access_key_id"] or "none: the platform's key, mapped buckets only"),
                ("Mapped buckets", ", ".join(result["buckets"]) or "none"),
                ("Artifact bucket", result["artifact_bucket"]),
            ]
        )
    )


accounts.add_command(_key_action("disable", "Disable ACCESS_KEY_ID (its tokens and console sessions end too)."))
accounts.add_command(_key_action("enable", "Enable ACCESS_KEY_ID again."))
accounts.add_command(_key_action("rotate", "Issue a new key for the same account and disable ACCESS_KEY_ID."))

COMMANDS = [accounts]
