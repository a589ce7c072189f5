"""Tracks by embedder and id: the track-template index reads one embedder's tracks by id (the tracks logged since
it was saved, and the count and sum of its ids when it checks itself against SQL) straight off this index.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_tracks_embedder_id_id", "tracks", ["embedder_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_tracks_embedder_id_id", table_name="tracks")
