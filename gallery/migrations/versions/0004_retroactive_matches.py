"""Retroactive matches: past tracks named after a later enrollment, kept beside the match events (which stay as
they were decided). ``rematches``: one row per pass (cause, embedder, threshold, gallery version, the identities
and media of the enrollment, the tracks looked at, counts); ``retro_matches``: one row per (track, identity) a pass
named, with its score, threshold and candidates.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=f"fk_{table}_{column}_{target}", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "rematches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cause", sa.String(16), nullable=False),
        sa.Column("embedder_id", sa.String(200), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("gallery_version", sa.Integer(), nullable=False),
        sa.Column("identities", sa.JSON(), nullable=True),
        sa.Column("media_ids", sa.JSON(), nullable=True),
        sa.Column("source", sa.String(500), nullable=True),
        sa.Column("since", sa.DateTime(), nullable=True),
        sa.Column("tracks_scored", sa.Integer(), nullable=False),
        sa.Column("matches", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_rematches"),
    )
    op.create_table(
        "retro_matches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("track_pk", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("identity_id", sa.Integer(), nullable=False),
        sa.Column("rematch_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("candidates", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        _fk("retro_matches", "track_pk", "tracks"),
        _fk("retro_matches", "source_id", "sources"),
        _fk("retro_matches", "identity_id", "identities"),
        _fk("retro_matches", "rematch_id", "rematches"),
        sa.PrimaryKeyConstraint("id", name="pk_retro_matches"),
        sa.UniqueConstraint("track_pk", "identity_id", name="uq_retro_matches_track_pk_identity_id"),
    )
    for cols in (["identity_id", "at", "id"], ["source_id", "at", "id"], ["at", "id"], ["rematch_id"]):
        op.create_index(f"ix_retro_matches_{'_'.join(cols)}", "retro_matches", cols)


def downgrade() -> None:
    op.drop_table("retro_matches")
    op.drop_table("rematches")
