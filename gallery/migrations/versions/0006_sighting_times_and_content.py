"""What the operator sees is true: sighting times, the threshold in force, sources known by content, enrolled
media that know where they came from, rematches that can be undone.

- ``tracks.seen_start``/``seen_end``: wall-clock times of a track's first and last frame, ``time_origin`` where they
  come from (``given``, ``container``, ``filename``, ``camera`` or ``unknown``); rows logged before are ``unknown``.
- ``runs.threshold``/``threshold_origin``: the open-set threshold a run decided with and why that one;
  ``runs.recorded_at``/``time_origin``: the wall clock of the run's stream time 0 and its origin; ``runs.path``:
  the path the source was read from in that run.
- ``sources.content_key``: a hash of a file's size and sampled blocks, so the same content under another path is
  the same source.
- ``media.kind`` (``image``, ``template`` or ``track``) and ``media.track_pk``: the logged track an enrolled face
  came from (a stored fact, never read from a file name).
- ``rematches.undone_at``: when the rematch was undone (its retroactive matches are then gone).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tracks") as batch:
        batch.add_column(sa.Column("seen_start", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("seen_end", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("time_origin", sa.String(16), nullable=False, server_default="unknown"))
        batch.create_index("ix_tracks_seen_start_id", ["seen_start", "id"])
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("threshold", sa.Float(), nullable=True))
        batch.add_column(sa.Column("threshold_origin", sa.String(300), nullable=True))
        batch.add_column(sa.Column("recorded_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("time_origin", sa.String(16), nullable=True))
        batch.add_column(sa.Column("path", sa.String(2000), nullable=True))
    with op.batch_alter_table("sources") as batch:
        batch.add_column(sa.Column("content_key", sa.String(64), nullable=True))
        batch.create_unique_constraint("uq_sources_content_key", ["content_key"])
    with op.batch_alter_table("media") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="image"))
        batch.add_column(sa.Column("track_pk", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_media_track_pk_tracks", "tracks", ["track_pk"], ["id"], ondelete="SET NULL"
        )
    with op.batch_alter_table("rematches") as batch:
        batch.add_column(sa.Column("undone_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rematches") as batch:
        batch.drop_column("undone_at")
    with op.batch_alter_table("media") as batch:
        batch.drop_constraint("fk_media_track_pk_tracks", type_="foreignkey")
        batch.drop_column("track_pk")
        batch.drop_column("kind")
    with op.batch_alter_table("sources") as batch:
        batch.drop_constraint("uq_sources_content_key", type_="unique")
        batch.drop_column("content_key")
    with op.batch_alter_table("runs") as batch:
        for name in ("path", "time_origin", "recorded_at", "threshold_origin", "threshold"):
            batch.drop_column(name)
    with op.batch_alter_table("tracks") as batch:
        batch.drop_index("ix_tracks_seen_start_id")
        for name in ("time_origin", "seen_end", "seen_start"):
            batch.drop_column(name)
