"""Initial schema: identities, media, templates, thresholds, gallery version, sources, runs, tracks, match
events.

Revision ID: 0001 Revises: Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _pk(table: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint("id", name=f"pk_{table}")


def _fk(table: str, column: str, target: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=f"fk_{table}_{column}_{target}", ondelete=ondelete
    )


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), nullable=False)


def _time(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(), nullable=nullable)


def upgrade() -> None:
    meta = op.create_table(
        "gallery_meta", _id(), sa.Column("version", sa.Integer(), nullable=False), _pk("gallery_meta")
    )
    op.bulk_insert(meta, [{"id": 1, "version": 0}])
    op.create_table(
        "identities",
        _id(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("external_id", sa.String(200), nullable=True),
        sa.Column("watchlist", sa.Boolean(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        _time("created_at"),
        _pk("identities"),
        sa.UniqueConstraint("name", name="uq_identities_name"),
    )
    op.create_index("ix_identities_external_id", "identities", ["external_id"])
    op.create_index("ix_identities_watchlist", "identities", ["watchlist"])
    op.create_table(
        "sources",
        _id(),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("uri", sa.String(2000), nullable=True),
        _time("created_at"),
        _pk("sources"),
        sa.UniqueConstraint("name", name="uq_sources_name"),
    )
    op.create_table(
        "thresholds",
        sa.Column("embedder_id", sa.String(200), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("target_fpir", sa.Float(), nullable=False),
        sa.Column("impostor_scores", sa.Integer(), nullable=False),
        sa.Column("gallery_version", sa.Integer(), nullable=False),
        _time("calibrated_at"),
        sa.PrimaryKeyConstraint("embedder_id", name="pk_thresholds"),
    )
    op.create_table(
        "media",
        _id(),
        sa.Column("identity_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(2000), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("embedder_id", sa.String(200), nullable=False),
        sa.Column("quality", sa.Float(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("norm", sa.Float(), nullable=False),
        _time("created_at"),
        _fk("media", "identity_id", "identities", "CASCADE"),
        _pk("media"),
        sa.UniqueConstraint("content_hash", "embedder_id", name="uq_media_content_hash_embedder_id"),
    )
    op.create_index("ix_media_identity_id", "media", ["identity_id"])
    op.create_table(
        "templates",
        _id(),
        sa.Column("identity_id", sa.Integer(), nullable=False),
        sa.Column("embedder_id", sa.String(200), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("num_media", sa.Integer(), nullable=False),
        _time("updated_at"),
        _fk("templates", "identity_id", "identities", "CASCADE"),
        _pk("templates"),
        sa.UniqueConstraint("identity_id", "embedder_id", name="uq_templates_identity_id_embedder_id"),
    )
    op.create_index("ix_templates_embedder_id", "templates", ["embedder_id"])
    op.create_table(
        "runs",
        _id(),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("config_hash", sa.String(128), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("frames_done", sa.Integer(), nullable=False),
        sa.Column("last_timestamp", sa.Float(), nullable=True),
        _time("started_at"),
        _time("updated_at"),
        _time("finished_at", nullable=True),
        _fk("runs", "source_id", "sources", "CASCADE"),
        _pk("runs"),
    )
    op.create_index("ix_runs_source_id_started_at", "runs", ["source_id", "started_at"])
    op.create_table(
        "tracks",
        _id(),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("track_id", sa.Integer(), nullable=False),
        sa.Column("start_time", sa.Float(), nullable=False),
        sa.Column("end_time", sa.Float(), nullable=False),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column("crops_embedded", sa.Integer(), nullable=False),
        sa.Column("embedder_id", sa.String(200), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("template", sa.LargeBinary(), nullable=False),
        sa.Column("thumbnail", sa.String(1000), nullable=True),
        _time("created_at"),
        _fk("tracks", "run_id", "runs", "CASCADE"),
        _fk("tracks", "source_id", "sources", "CASCADE"),
        _pk("tracks"),
        sa.UniqueConstraint("run_id", "track_id", name="uq_tracks_run_id_track_id"),
    )
    op.create_index("ix_tracks_created_at", "tracks", ["created_at"])
    op.create_index("ix_tracks_source_id_created_at", "tracks", ["source_id", "created_at"])
    op.create_table(
        "match_events",
        _id(),
        sa.Column("track_pk", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("identity_id", sa.Integer(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("candidates", sa.JSON(), nullable=False),
        _time("at"),
        sa.ForeignKeyConstraint(
            ["track_pk"], ["tracks.id"], name="fk_match_events_track_pk_tracks", ondelete="CASCADE"
        ),
        _fk("match_events", "source_id", "sources", "CASCADE"),
        _fk("match_events", "identity_id", "identities", "SET NULL"),
        _pk("match_events"),
        sa.UniqueConstraint("track_pk", name="uq_match_events_track_pk"),
    )
    for cols in (["at"], ["decision", "at"], ["identity_id", "at"], ["source_id", "at"]):
        op.create_index(f"ix_match_events_{'_'.join(cols)}", "match_events", cols)


def downgrade() -> None:
    for table in (
        "match_events",
        "tracks",
        "runs",
        "templates",
        "media",
        "thresholds",
        "sources",
        "identities",
        "gallery_meta",
    ):
        op.drop_table(table)
