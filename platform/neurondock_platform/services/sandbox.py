"""Whether this platform can run an account's code, from what its host agents report.

Each host agent probes the user-code sandbox when it starts (``neurondock_workers.sandbox``) and
writes the outcome on its host row: ``bwrap``, ``off`` (the operator started with
``--unsafe-unsandboxed-user-code``) or ``unavailable: <why>``. Where a live host cannot sandbox,
accounts other than admins may not deploy or compile: their code would run as the platform's own
user there (docs/sandbox.md).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from neurondock_platform.db import utcnow
from neurondock_platform.errors import SandboxUnavailable
from neurondock_platform.models import Account, Host

SANDBOXED = "bwrap"
OPTED_OUT = "off"
# A host that has not reported for this long is not counted (it is gone, or not started yet).
REPORT_SECONDS = 60.0


@dataclass(frozen=True)
class SandboxMode:
    """How this platform's live hosts run user code."""

    # "on": every live host sandboxes; "off": the operator opted out; "unavailable": a host cannot
    # sandbox; "unknown": no host has reported yet.
    state: str
    detail: str

    @property
    def label(self) -> str:
        return {"on": "on", "off": "OFF (unsafe)", "unavailable": "unavailable", "unknown": "unknown"}[self.state]


def sandbox_mode(session: Session, now: dt.datetime | None = None) -> SandboxMode:
    """Summarize the live hosts' reports."""
    cutoff = (now or utcnow()) - dt.timedelta(seconds=REPORT_SECONDS)
    reports = session.execute(
        select(Host.id, Host.sandbox).where(Host.last_heartbeat >= cutoff, Host.sandbox.is_not(None))
    ).all()
    if not reports:
        return SandboxMode("unknown", "no host agent has reported how it runs model code yet")
    broken = [(host, str(report)) for host, report in reports if report not in (SANDBOXED, OPTED_OUT)]
    if broken:
        detail = "; ".join(f"host {host}: {report.removeprefix('unavailable: ')}" for host, report in broken)
        return SandboxMode("unavailable", detail)
    if any(report == OPTED_OUT for _, report in reports):
        return SandboxMode("off", "the operator started neurondock with --unsafe-unsandboxed-user-code")
    return SandboxMode("on", f"model code runs in bubblewrap on {len(reports)} host(s)")


def require_sandbox_for(session: Session, account_id: str, action: str) -> None:
    """Refuse ``action`` (deploy, compile) for a non-admin account while a live host cannot sandbox.

    Raises:
        SandboxUnavailable: the account is not an admin and some live host reports no sandbox.
    """
    account = session.get(Account, account_id)
    if account is not None and account.is_admin:
        return
    mode = sandbox_mode(session)
    if mode.state == "unavailable":
        raise SandboxUnavailable(action=action, account_id=account_id, detail=mode.detail)
