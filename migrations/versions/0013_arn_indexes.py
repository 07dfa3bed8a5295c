"""arn indexes: Describe/Create by ARN no longer scans every resource of the account

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 00:15:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("endpoints", "endpoint_configs", "models")


def upgrade() -> None:
    for table in TABLES:
        op.create_index(f"ix_{table}_arn", table, ["arn"])


def downgrade() -> None:
    for table in TABLES:
        op.drop_index(f"ix_{table}_arn", table_name=table)
