"""``serve``'s app: the web app (:func:`pipeline.web.app.create_app`) given the serve gallery's database and
thumbnail store and what its search by photo and its unknown groups need (:class:`pipeline.web.common.Forensic`).

- Search by photo is the ``search`` command's (:func:`pipeline.services.search.find_person`): the configured
  detector and embedder, built through the one builder at the first search and kept (``serve`` without a search
  stays light), the serve gallery's database and track indexes. One search runs at a time. A detector or embedder
  that does not load makes the search answer 503 with the reason, and is not tried again until the next start.
- Clips are :func:`pipeline.services.footage.track_clip`'s (cut on demand from the track's file or its camera's
  recordings, ``live.recording.dir``, cached in the thumbnail store); the export of one track is
  :func:`pipeline.services.evidence.export_evidence`'s, zipped in a temporary folder that is removed once sent, its
  case named after the track and the time.
- Enrollment over HTTP is the ``enroll``/``remove``/``rename`` commands' (:mod:`pipeline.web.enrollment`), with
  the same detector and embedder, loaded at the first use.
- Unknown groups are ``query unknowns``' (:func:`pipeline.services.unknowns.grouping`), with the config's
  ``gallery.unknowns`` defaults and the matcher's operating threshold.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Iterable
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

from fastapi import FastAPI

from core.errors import UserError
from gallery.recordings import RecordingStore
from gallery.thumbnails import ThumbnailStore
from gallery.track_search import TrackHit
from pipeline.build import System, build
from pipeline.config import AppConfig
from pipeline.services.audit import system_trail
from pipeline.services.clips import DEFAULT_MARGIN_S
from pipeline.services.evidence import export_evidence
from pipeline.services.footage import track_clip
from pipeline.services.search import find_person
from pipeline.services.unknowns import grouping
from pipeline.web.access_log import AccessLog
from pipeline.web.app import create_app
from pipeline.web.common import Evidence, Forensic, SearchUnavailable
from pipeline.web.enrollment import enrolling_of

logger = logging.getLogger(__name__)

__all__ = ["LazyModels", "evidence_of", "forensic_of", "serve_app"]


class LazyModels:
    """The detector and embedder of ``cfg``, built at the first :meth:`get` (once; a failure is kept and said
    again); close it (or use it as a context manager) to release them."""

    def __init__(self, cfg: AppConfig) -> None:
        self.cfg = cfg
        self._system: System | None = None
        self._error: str | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> LazyModels:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def loaded(self) -> bool:
        return self._system is not None

    def get(self) -> System:
        with self._lock:
            if self._system is None and self._error is None:
                logger.info("search by photo: loading the detector and the embedder")
                try:
                    self._system = build(self.cfg, gallery=False)
                except UserError as exc:
                    self._error = str(exc)
                    logger.error("search by photo unavailable: %s", exc)
            if self._system is None:
                raise SearchUnavailable(self._error)
            return self._system

    def close(self) -> None:
        with self._lock:
            if self._system is not None:
                self._system.close()
                self._system = None


def forensic_of(system: System, models: LazyModels) -> Forensic:
    """What the forensic endpoints of ``system``'s gallery need: search by photo through ``models``, grouping of
    the unknowns, and the ``gallery.serve`` upload limit and photo folders."""
    lock = threading.Lock()

    def search(photos: list[tuple[str, bytes]], **options) -> list[TrackHit]:
        with lock:  # one search at a time: the models and the track index are shared
            gallery = system.gallery
            return find_person(
                models.get(), gallery.db, system.track_indexes, photos, option="face", **options
            )

    serve = system.cfg.gallery.serve
    return Forensic(
        search=search,
        unknowns=partial(grouping, system.gallery, system.cfg),
        max_upload_bytes=serve.max_upload_bytes,
        media_dirs=serve.media_dirs,
    )


def evidence_of(system: System, store: ThumbnailStore | None) -> Evidence:
    """The clip maker and the one-track evidence export over ``system``'s gallery and ``store``."""
    db, media_dirs = system.gallery.db, system.cfg.gallery.serve.media_dirs
    recordings = RecordingStore.for_recordings(db, system.cfg.live.recording.dir, system.cfg.gallery)

    def export(ref: str) -> Path:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        folder = Path(tempfile.mkdtemp(prefix="facemoe-export-"))
        out = folder / f"evidence_{ref.replace(':', '_')}_{stamp.replace('.', '_')}"
        try:
            report = export_evidence(
                db,
                store,
                [ref],
                out,
                case=f"track {ref} exported {stamp}",
                media_dirs=media_dirs,
                make_zip=True,
                operator="serve",
                recordings=recordings,
            )
            shutil.rmtree(report.out)  # the zip holds it
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        assert report.zip is not None
        return report.zip

    clip = partial(track_clip, db, store, recordings=recordings)
    return Evidence(clip=clip, export=export, margin_s=DEFAULT_MARGIN_S)


def serve_app(
    system: System,
    models: LazyModels,
    *,
    token: str | None = None,
    allowed_hosts: Iterable[str] | None = None,
    access_log=None,
) -> FastAPI:
    """The app ``serve`` runs over ``system``'s gallery (its config's ``gallery`` section: thumbnails, page size,
    upload limit, session length), with search by photo through ``models``; its audit trail keeps the head where
    the config says (:func:`pipeline.services.audit.system_trail`); ``access_log``: an open text file the access
    log is appended to (:mod:`pipeline.web.access_log`), None: none."""
    db, config = system.gallery.db, system.cfg.gallery
    store = ThumbnailStore.for_database(db, config)
    app = create_app(
        db,
        store,
        token=token,
        page_size=config.serve.page_size,
        allowed_hosts=allowed_hosts,
        forensic=forensic_of(system, models),
        session_max_age_s=config.serve.session_max_age_s,
        evidence=evidence_of(system, store),
        enrolling=enrolling_of(system, models),
    )
    app.state.audit_trail = system_trail(system)
    if access_log is not None:
        app.add_middleware(AccessLog, out=access_log)  # outermost: every answer, refusals included
    return app
