"""The one builder: a validated config in, the system out (detector, embedder, gallery, matcher, sinks).

Every command (process, stream, enroll, eval video, serve, query, purge, the Ray workers) and the Python API
build through :func:`build`, so a config section means the same whatever the door. The gallery is always the SQL
gallery of :mod:`gallery` opened with the config's ``gallery`` section; ``db_url=None`` means a temporary SQLite
database (deleted on close) for commands that have no ``--db``. ``--gallery DIR`` means one thing everywhere:
:meth:`System.enroll_folder`, the enrollment rule of ``enroll --dir``, into that database.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from gallery.enroll import Enroller, EnrollReport, FaceExtractor
from gallery.errors import EnrollmentError
from gallery.matchlog import config_hash
from gallery.runs import mark_interrupted_runs
from gallery.store import Gallery
from gallery.thresholds import InForce
from gallery.thumbnails import ThumbnailStore
from gallery.track_index import TrackIndexes
from pipeline.config import AppConfig
from pipeline.sinks.sql_gallery import LoggedSource, MatchLogSink, SqlGalleryIndex
from stages.align import align_face
from stages.cores import CoreBudget
from stages.detect import FaceDetector
from stages.embed import Embedder, build_embedder
from stages.match import Matcher
from stages.quality import QualityScorer

__all__ = ["System", "build", "face_extractor", "find_faces"]

logger = logging.getLogger(__name__)


def find_faces(
    detector: FaceDetector, scorer: QualityScorer, image: np.ndarray, portrait: bool = False
) -> list[tuple[np.ndarray, float, np.ndarray, float]]:
    """Every face the detector finds in a BGR image: (box ``[4]`` xyxy, detector score, aligned 112x112 BGR crop,
    quality score). ``portrait``: the image letterboxed only (:meth:`FaceDetector.letterboxed`)."""
    dets = (detector.letterboxed if portrait else detector.detect)([image])[0]
    faces = []
    for box, score, landmarks in zip(dets.xyxy, dets.score, dets.landmarks):
        crop = align_face(image, landmarks)
        faces.append(
            (box, float(score), crop, scorer.score(scorer.assess(crop, box, float(score), landmarks)))
        )
    return faces


def face_extractor(detector: FaceDetector, scorer: QualityScorer) -> FaceExtractor:
    """``image -> [(aligned 112x112 BGR crop, quality score)]`` for every face of an enrollment photo (a portrait:
    its subject is never a face too small for the letterboxed image)."""
    return lambda image: [
        (crop, quality) for _, _, crop, quality in find_faces(detector, scorer, image, portrait=True)
    ]


class System:
    """What a config builds; close it (or use it as a context manager) to release the gallery.

    ``detector``/``embedder`` are None when the command did not ask for them; ``gallery`` is None only for
    commands that need no database."""

    def __init__(
        self,
        cfg: AppConfig,
        detector: FaceDetector | None,
        embedder: Embedder | None,
        gallery: Gallery | None,
        temp_dir: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.detector = detector
        self.embedder = embedder
        self.gallery = gallery
        self.enrollment: EnrollReport | None = None  # the report of the last enroll_folder
        self.track_indexes = (  # the match log's track-template indexes, opened by the first search
            TrackIndexes(gallery.db, gallery.config)
            if gallery is not None and gallery.config.index.tracks
            else None
        )
        self._temp_dir = temp_dir

    def __enter__(self) -> System:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.detector is not None:
            self.detector.close()
        if self.track_indexes is not None:
            self.track_indexes.close()
            self.track_indexes = None
        if self.gallery is not None:
            self.gallery.close()
            self.gallery = None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    @property
    def config_hash(self) -> str:
        """Digest of the whole config, stored with every run of the match log."""
        return config_hash(self.cfg.model_dump_json())

    def index(self) -> SqlGalleryIndex:
        """The gallery of this embedder as the matcher's index, at the one operating threshold: ``match.threshold``
        when set, else the gallery's own (``gallery.threshold.override``, the calibration, its default)."""
        return SqlGalleryIndex(self.gallery, self.embedder.embedder_id, self.cfg.match.threshold)

    def matcher(self, index: SqlGalleryIndex | None = None) -> Matcher:
        return Matcher(self.cfg.match, index or self.index())

    def enroller(self, min_quality: float = 0.0) -> Enroller:
        extract = face_extractor(self.detector, QualityScorer(self.cfg.quality))
        return Enroller(self.gallery, extract, self.embedder, min_quality=min_quality)

    def enroll_folder(self, folder: Path) -> EnrollReport:
        """Enroll the people of ``folder`` (one subfolder per person, or images named after them); images already
        enrolled are skipped by content hash. A folder that yields no face at all is an :class:`EnrollmentError`."""
        report = self.enroller().enroll_folder(Path(folder))
        for problem in report.problems:
            logger.warning(
                "gallery %s %s: %s %s", problem.identity, problem.path, problem.status, problem.detail
            )
        self.enrollment = report
        new, known = report.count("enrolled"), report.count("duplicate")
        if not new and not known:
            raise EnrollmentError(
                f"no face found in any image of the gallery folder {folder} "
                f"({len(report.problems)} images with problems, listed above)"
            )
        logger.info("gallery %s: %d images enrolled, %d already enrolled", folder, new, known)
        return report

    def match_log(
        self,
        sources: list[LoggedSource],
        batch_size: int | None = None,
        resumed_from: dict[str, int] | None = None,
        threshold: InForce | None = None,
    ) -> MatchLogSink:
        """A match-log sink writing one run per source (``batch_size`` tracks per transaction; default the
        config's ``gallery.match_log.batch_size``; heartbeat ``gallery.match_log.heartbeat_s``); ``resumed_from``:
        the interrupted run a source's run continues; ``threshold``: the one in force, stored on each run (default:
        this system's, :meth:`index`)."""
        section = self.cfg.gallery.match_log
        size = section.batch_size if batch_size is None else batch_size
        cfg_hash, embedder_id = self.config_hash, self.embedder.embedder_id
        return MatchLogSink(
            self.gallery,
            sources,
            embedder_id,
            cfg_hash,
            size,
            section.heartbeat_s,
            resumed_from,
            self.track_indexes,
            threshold if threshold is not None else self.index().in_force,
        )


def _open_gallery(cfg: AppConfig, db_url: str | None, create: bool) -> tuple[Gallery, Path | None]:
    if db_url is not None:
        gallery = Gallery.open(db_url, cfg.gallery, create=create)
        try:
            if create:  # a writer: runs left `running` by a process that is gone are marked interrupted first
                count = mark_interrupted_runs(
                    gallery.db, ThumbnailStore.for_database(gallery.db, gallery.config)
                )
                if count:
                    logger.warning("%d runs of a process that is gone marked interrupted", count)
        except BaseException:
            gallery.close()
            raise
        return gallery, None
    temp = Path(tempfile.mkdtemp(prefix="facemoe-gallery-"))
    section = cfg.gallery.model_copy(update={"storage_dir": str(temp), "thumbnails_dir": None})
    try:
        return Gallery.open(f"sqlite:///{temp / 'gallery.db'}", section), temp
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def _core_budget(cfg: AppConfig) -> CoreBudget | None:
    """The budget a CPU FaceMoE embedder shares with the detector of the same process (``runner.share_cores``):
    detection holds ``detect.threads`` cores (all but one at most); logged once."""
    if cfg.embed.backend != "facemoe" or cfg.embed.device != "cpu":
        return None
    if not cfg.runner.share_cores:
        logger.info("FaceMoE threads: torch's own thread count throughout (runner.share_cores: false)")
        return None
    budget = CoreBudget(cfg.runner.cores, cfg.detect.threads)
    logger.info("FaceMoE threads: %s", budget.describe())
    return budget


def build(
    cfg: AppConfig,
    *,
    db_url: str | None = None,
    gallery_dir: Path | None = None,
    detector: bool = True,
    embedder: bool = True,
    gallery: bool = True,
    create: bool = True,
) -> System:
    """Build what a command needs from ``cfg``: the detector and embedder (``detect`` and ``embed`` sections),
    the gallery (``gallery`` section; ``db_url`` None: a temporary database; ``create`` False: a database without
    the gallery schema is an error, not created), and with ``gallery_dir`` the folder's people enrolled into it."""
    want_detector, want_embedder = detector or gallery_dir is not None, embedder or gallery_dir is not None
    cores = _core_budget(cfg) if want_detector and want_embedder else None
    det = FaceDetector(cfg.detect) if want_detector else None
    emb = build_embedder(cfg.embed, cores) if want_embedder else None
    store, temp = _open_gallery(cfg, db_url, create) if gallery or gallery_dir is not None else (None, None)
    system = System(cfg, det, emb, store, temp)
    if gallery_dir is not None:
        try:
            system.enroll_folder(gallery_dir)
        except BaseException:
            system.close()
            raise
    return system
