"""Evidence an investigator can show.

- ``tracks.snapshot``: the store-relative context frame of a track's best crop (boxed and labelled);
  ``tracks.boxes``: the track's face box on every frame it was seen (:mod:`gallery.track_boxes`), from which its
  clip is drawn; ``tracks.zones``: the names of the camera zones it entered. Rows logged before have none.
- ``recordings``: camera segments remuxed to MP4, by camera and wall-clock start; ``cases`` and ``case_holds``: an
  open case keeps the segments its clips were cut from out of retention.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tracks") as batch:
        batch.add_column(sa.Column("snapshot", sa.String(1000), nullable=True))
        batch.add_column(sa.Column("boxes", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("zones", sa.JSON(), nullable=True))
    op.create_table(
        "recordings",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("camera", sa.String(500), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("path", sa.String(1000), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("masks", sa.JSON(), nullable=True),
        sa.UniqueConstraint("path", name="uq_recordings_path"),
    )
    op.create_index("ix_recordings_camera_started_at", "recordings", ["camera", "started_at"])
    op.create_index("ix_recordings_started_at_id", "recordings", ["started_at", "id"])
    op.create_table(
        "cases",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("operator", sa.String(200), nullable=False),
        sa.Column("opened_at", sa.DateTime(), nullable=False),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.UniqueConstraint("name", name="uq_cases_name"),
    )
    op.create_table(
        "case_holds",
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("recording_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name="fk_case_holds_case_id_cases", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["recording_id"],
            ["recordings.id"],
            name="fk_case_holds_recording_id_recordings",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("case_id", "recording_id", name="pk_case_holds"),
    )


def downgrade() -> None:
    op.drop_table("case_holds")
    op.drop_table("cases")
    op.drop_index("ix_recordings_started_at_id", table_name="recordings")
    op.drop_index("ix_recordings_camera_started_at", table_name="recordings")
    op.drop_table("recordings")
    with op.batch_alter_table("tracks") as batch:
        batch.drop_column("zones")
        batch.drop_column("boxes")
        batch.drop_column("snapshot")
