"""Runs know their owner and where they can resume: the process that writes a run (host, pid, process start
time) so that a run whose process is gone can be marked ``interrupted``, the earliest stream time a re-run must
decode from (``resume_at``, the start of the oldest track still open at the last committed position) and the run
a resumed run continues (``resumed_from``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = (
    ("owner_host", sa.String(255)),
    ("owner_pid", sa.Integer()),
    ("owner_started", sa.Float()),
    ("resume_at", sa.Float()),
    ("resumed_from", sa.Integer()),
)


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        for name, kind in COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
