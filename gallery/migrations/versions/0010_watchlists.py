"""Watch lists with their own alert threshold and cameras, and their members.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "watchlists",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("cameras", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("name", name="uq_watchlists_name"),
    )
    op.create_table(
        "watchlist_members",
        sa.Column("watchlist_id", sa.Integer(), nullable=False),
        sa.Column("identity_id", sa.Integer(), nullable=False),
        sa.Column("added_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("watchlist_id", "identity_id", name="pk_watchlist_members"),
        sa.ForeignKeyConstraint(
            ["watchlist_id"],
            ["watchlists.id"],
            name="fk_watchlist_members_watchlist_id_watchlists",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["identity_id"],
            ["identities.id"],
            name="fk_watchlist_members_identity_id_identities",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_watchlist_members_identity_id", "watchlist_members", ["identity_id"])


def downgrade() -> None:
    op.drop_index("ix_watchlist_members_identity_id", table_name="watchlist_members")
    op.drop_table("watchlist_members")
    op.drop_table("watchlists")
