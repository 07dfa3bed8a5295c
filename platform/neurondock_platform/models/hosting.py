"""Worker hosts and the replica processes the host agents run for endpoint variants."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from neurondock_platform.db import Base, JsonDict, Timestamp, utcnow
from neurondock_platform.models.status import ReplicaState


class Host(Base):
    __tablename__ = "hosts"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    address: Mapped[str] = mapped_column(String(255))
    chips: Mapped[int] = mapped_column(default=0)
    vcpus: Mapped[int] = mapped_column(default=0)
    memory_mb: Mapped[int] = mapped_column(default=0)
    agent_pid: Mapped[int | None]
    # How the host runs user code: "bwrap", "off" (the operator opted out) or "unavailable: <why>".
    sandbox: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[Timestamp]
    last_heartbeat: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Replica(Base):
    """One model-server process serving one instance of a variant on one host."""

    __tablename__ = "replicas"
    __table_args__ = (UniqueConstraint("variant_id", "ordinal"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"), index=True)
    variant_id: Mapped[int] = mapped_column(ForeignKey("endpoint_variants.id", ondelete="CASCADE"), index=True)
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id"), index=True)
    ordinal: Mapped[int] = mapped_column(default=0)
    # What the reconciler wants ("running"/"stopped"); ``state`` is what the host agent observed.
    desired_state: Mapped[str] = mapped_column(String(16), default="running")
    state: Mapped[ReplicaState] = mapped_column(String(16), default=ReplicaState.PENDING)
    address: Mapped[str | None] = mapped_column(String(255))
    # The serving process's channel key (dataplane/protocol.py): routers must prove it to talk to it.
    # Platform-internal: never shown by any API.
    channel_key: Mapped[str | None] = mapped_column(String(64))
    pid: Mapped[int | None]
    failure_reason: Mapped[str | None] = mapped_column(Text)
    log_tail: Mapped[str | None] = mapped_column(Text)
    restarts: Mapped[int] = mapped_column(default=0)
    setup_seconds: Mapped[float | None]
    extra: Mapped[JsonDict]
    created_at: Mapped[Timestamp]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
