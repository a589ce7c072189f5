"""Newest-first indexes end with the row id: every match-log page orders by (time desc, id desc), and an index
ending with both columns returns that order itself, so a page stops after its rows without a sort.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# table -> column lists of the time-ordered indexes (without the trailing id)
ORDERED = {
    "match_events": (["identity_id", "at"], ["source_id", "at"], ["decision", "at"], ["at"]),
    "tracks": (["source_id", "created_at"], ["created_at"]),
}


def _name(table: str, cols: list[str]) -> str:
    return f"ix_{table}_{'_'.join(cols)}"


def upgrade() -> None:
    for table, indexes in ORDERED.items():
        for cols in indexes:
            op.drop_index(_name(table, cols), table_name=table)
            op.create_index(_name(table, [*cols, "id"]), table, [*cols, "id"])


def downgrade() -> None:
    for table, indexes in ORDERED.items():
        for cols in indexes:
            op.drop_index(_name(table, [*cols, "id"]), table_name=table)
            op.create_index(_name(table, cols), table, cols)
