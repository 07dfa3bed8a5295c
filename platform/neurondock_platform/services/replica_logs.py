"""Replica logs for operators: the last lines of each replica's log, and a cursor to follow them.

A replica's ``replica.log`` lives under ``settings.replicas_dir/<id>/`` on the host that runs it; on
any other host the reader falls back to the ``log_tail`` that host's agent stored with the replica
row. A cursor holds each log's read position, so a client can ask for only what was appended.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from neurondock_platform.config import Settings
from neurondock_platform.errors import ValidationException
from neurondock_platform.models import Endpoint, Replica
from neurondock_platform.services import pagination
from neurondock_platform.services.fleet import ReplicaView

LOG_FILE = "replica.log"
MAX_TAIL_LINES = 5000
DEFAULT_TAIL_LINES = 200
_TAIL_BYTES = 512 * 1024
_FOLLOW_BYTES = 1024 * 1024


@dataclass
class LogChunk:
    """Lines of one replica's log and where they came from."""

    replica_id: int
    variant_name: str | None
    host_id: str
    state: str
    source: str
    lines: list[str]
    offset: int | None = None


def replica_log_path(settings: Settings, replica_id: int) -> Path:
    """Return where the host agent writes a replica's log on its host."""
    return settings.replicas_dir / str(replica_id) / LOG_FILE


def _tail(path: Path, lines: int) -> tuple[list[str], int]:
    with path.open("rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - _TAIL_BYTES))
        data = f.read()
    text = data.decode("utf-8", "replace").splitlines()
    if size > _TAIL_BYTES and text:
        text = text[1:]  # the first line was cut by the seek
    return text[-lines:] if lines else [], size


def _since(path: Path, offset: int) -> tuple[list[str], int]:
    with path.open("rb") as f:
        f.seek(0, 2)
        size = f.tell()
        if offset > size:
            offset = 0  # the log was rotated: start over
        f.seek(offset)
        data = f.read(_FOLLOW_BYTES)
    # Only hand out whole lines; a partial last line waits for the next call.
    cut = data.rfind(b"\n") + 1
    return data[:cut].decode("utf-8", "replace").splitlines(), offset + cut


def encode_log_cursor(endpoint_id: int, offsets: dict[int, int]) -> str:
    """Return an opaque cursor holding each replica log's read position."""
    return pagination.encode_token({"s": f"logs:{endpoint_id}", "o": {str(k): v for k, v in offsets.items()}})


def decode_log_cursor(endpoint_id: int, cursor: str) -> dict[int, int]:
    """Return the read positions of a cursor issued for this endpoint."""
    payload = pagination.decode_token(cursor)
    raw = payload.get("o")
    if payload.get("s") != f"logs:{endpoint_id}" or not isinstance(raw, dict):
        raise ValidationException(
            "Invalid log cursor: pass back the cursor a previous call for this endpoint returned."
        )
    try:
        return {int(k): int(v) for k, v in raw.items() if int(v) >= 0}
    except (TypeError, ValueError) as exc:
        raise ValidationException("Invalid log cursor.") from exc


def read_replica_logs(
    settings: Settings,
    replicas: Iterable[ReplicaView],
    log_tails: dict[int, str | None],
    *,
    lines: int = DEFAULT_TAIL_LINES,
    offsets: dict[int, int] | None = None,
) -> tuple[list[LogChunk], dict[int, int]]:
    """Return each replica's last ``lines`` lines (or what was appended since ``offsets``) and new offsets."""
    lines = max(0, min(MAX_TAIL_LINES, lines))
    chunks = []
    positions: dict[int, int] = {}
    for replica in replicas:
        path = replica_log_path(settings, replica.id)
        local = replica.host_id == settings.host_id and path.is_file()
        if local:
            try:
                if offsets is not None and replica.id in offsets:
                    text, position = _since(path, offsets[replica.id])
                else:
                    text, position = _tail(path, lines)
            except OSError:
                local = False
            else:
                positions[replica.id] = position
                chunks.append(
                    LogChunk(replica.id, replica.variant_name, replica.host_id, replica.state, "file", text, position)
                )
                continue
        stored = (log_tails.get(replica.id) or "").splitlines()
        if offsets is not None and replica.id in offsets:
            stored = []  # a stored tail has no positions to follow: it was sent with the first call
        positions[replica.id] = 0
        chunks.append(
            LogChunk(
                replica.id,
                replica.variant_name,
                replica.host_id,
                replica.state,
                "database" if stored or log_tails.get(replica.id) else "none",
                stored[-lines:] if lines else [],
            )
        )
    return chunks, positions


def stored_tails(session: Session, endpoint: Endpoint) -> dict[int, str | None]:
    """Return the log tail each of the endpoint's replicas' host agents stored, by replica id."""
    rows = session.execute(select(Replica.id, Replica.log_tail).where(Replica.endpoint_id == endpoint.id))
    return {int(rid): tail for rid, tail in rows}


def endpoint_logs(
    session: Session,
    settings: Settings,
    endpoint: Endpoint,
    replicas: Iterable[ReplicaView],
    *,
    lines: int = DEFAULT_TAIL_LINES,
    cursor: str | None = None,
) -> tuple[list[LogChunk], str]:
    """Return the logs of the given replicas of ``endpoint`` (what was appended since ``cursor``) and a new cursor."""
    offsets = decode_log_cursor(endpoint.id, cursor) if cursor else None
    chunks, positions = read_replica_logs(
        settings, replicas, stored_tails(session, endpoint), lines=lines, offsets=offsets
    )
    return chunks, encode_log_cursor(endpoint.id, positions)
