"""Accountable use: users with roles, the hash-chained audit trail, reviews of decisions.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_id", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.String(300), nullable=False),
        sa.Column("password_hash", sa.String(300), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("rotated_at", sa.DateTime(), nullable=True),
        sa.Column("disabled_at", sa.DateTime(), nullable=True),
        sa.UniqueConstraint("name", name="uq_users_name"),
        sa.UniqueConstraint("token_id", name="uq_users_token_id"),
    )
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("actor_kind", sa.String(16), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("objects", sa.JSON(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("hash", name="uq_audit_hash"),
    )
    op.create_index("ix_audit_at_id", "audit", ["at", "id"])
    op.create_index("ix_audit_actor_at_id", "audit", ["actor", "at", "id"])
    op.create_index("ix_audit_action_at_id", "audit", ["action", "at", "id"])
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("track_pk", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("identity_id", sa.Integer(), nullable=True),
        sa.Column("retro_id", sa.Integer(), nullable=True),
        sa.Column("reviewer", sa.String(200), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["track_pk"], ["tracks.id"], name="fk_reviews_track_pk_tracks", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["identity_id"], ["identities.id"], name="fk_reviews_identity_id_identities", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["retro_id"], ["retro_matches.id"], name="fk_reviews_retro_id_retro_matches", ondelete="SET NULL"
        ),
    )
    op.create_index("ix_reviews_track_pk_at_id", "reviews", ["track_pk", "at", "id"])
    op.create_index("ix_reviews_at_id", "reviews", ["at", "id"])


def downgrade() -> None:
    op.drop_index("ix_reviews_at_id", table_name="reviews")
    op.drop_index("ix_reviews_track_pk_at_id", table_name="reviews")
    op.drop_table("reviews")
    op.drop_index("ix_audit_action_at_id", table_name="audit")
    op.drop_index("ix_audit_actor_at_id", table_name="audit")
    op.drop_index("ix_audit_at_id", table_name="audit")
    op.drop_table("audit")
    op.drop_table("users")
