"""Faces enrolled from tracks before 0006 become media of kind ``track``. ``enroll --from-track`` stored such a face
with the path ``track RUN:TRACK (source)`` and the content hash ``sha256("track-template:" + embedder id +
template)``; the path only says which track to check, the content hash decides: a row becomes that track's only when
the hash is its template's (a photo that is merely named so stays an ``image``). A row whose track was purged stays
an ``image`` that no view can show (its path names no file).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

import hashlib
import re

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

NAMED = re.compile(r"^track (\d{1,18}):(\d{1,18}) \(")


def upgrade() -> None:
    conn = op.get_bind()
    media = sa.table(
        "media",
        sa.column("id", sa.Integer),
        sa.column("kind", sa.String),
        sa.column("track_pk", sa.Integer),
        sa.column("path", sa.String),
        sa.column("content_hash", sa.String),
        sa.column("embedder_id", sa.String),
    )
    tracks = sa.table(
        "tracks",
        sa.column("id", sa.Integer),
        sa.column("run_id", sa.Integer),
        sa.column("track_id", sa.Integer),
        sa.column("embedder_id", sa.String),
        sa.column("template", sa.LargeBinary),
    )
    candidates = conn.execute(
        sa.select(media.c.id, media.c.path, media.c.content_hash, media.c.embedder_id).where(
            media.c.kind == "image", media.c.path.like("track %")
        )
    ).all()
    for media_id, path, content_hash, embedder_id in candidates:
        named = NAMED.match(path)
        if named is None:
            continue
        track = conn.execute(
            sa.select(tracks.c.id, tracks.c.template).where(
                tracks.c.run_id == int(named.group(1)),
                tracks.c.track_id == int(named.group(2)),
                tracks.c.embedder_id == embedder_id,
            )
        ).first()
        if track is None:
            continue
        digest = hashlib.sha256(b"track-template:" + embedder_id.encode() + bytes(track.template)).hexdigest()
        if digest == content_hash:
            conn.execute(
                sa.update(media).where(media.c.id == media_id).values(kind="track", track_pk=track.id)
            )


def downgrade() -> None:
    pass  # 0006's downgrade drops the columns these rows gained
