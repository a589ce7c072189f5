"""Configuration of the gallery, the match log and the HTTP server (the ``gallery`` section of a YAML
file).

Sections derive from :class:`core.config.Section` (unknown keys refused, frozen); a bad file or value is a
:class:`core.errors.ConfigError` naming the file and the dotted key.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from core.config import Section, read_yaml, validate

logger = logging.getLogger(__name__)

__all__ = [
    "IndexConfig",
    "ThresholdConfig",
    "MatchLogConfig",
    "ServeConfig",
    "UnknownsConfig",
    "AuditConfig",
    "GalleryConfig",
    "load_gallery_config",
]


class IndexConfig(Section):
    hnsw_above: int = Field(
        50_000,
        ge=0,
        le=10**10,
        description="galleries with more templates than this use HNSW, smaller ones exact search",
    )
    hnsw_m: int = Field(32, ge=4, le=256, description="HNSW graph degree (neighbours per node)")
    hnsw_ef_construction: int = Field(
        80, ge=8, le=4096, description="HNSW candidate list size while building"
    )
    hnsw_ef_search: int = Field(
        512, ge=1, le=8192, description="HNSW candidate list size while searching (512: recall@1 0.99 at 1M)"
    )
    persist: bool = Field(
        True, description="save the index beside the database and reuse it while it is current"
    )
    tracks: bool = Field(
        True,
        description="keep an index of the match log's track templates for search by face (same kinds and folder); "
        "off: every search is exact, streamed from SQL",
    )
    track_ef_search: int = Field(
        384,
        ge=1,
        le=8192,
        description="HNSW candidate list size of the track-template index while searching (384: recall@10 0.958 "
        "at 1M, docs/track_search.md)",
    )
    gpu: bool = Field(
        True,
        description="search exact indexes on the GPU(s) when FAISS sees one (faiss-gpu); files stay CPU indexes",
    )


class ThresholdConfig(Section):
    target_fpir: float = Field(
        0.01,
        gt=0.0,
        lt=1.0,
        description="false-positive identification rate the calibrated threshold aims at",
    )
    override: float | None = Field(
        None, ge=-1.0, le=1.0, description="fixed operating threshold (cosine); replaces the calibrated one"
    )
    default: float = Field(
        0.35, ge=-1.0, le=1.0, description="threshold used while the gallery is too small to calibrate"
    )
    min_impostor_scores: int = Field(
        20, ge=1, le=10**7, description="fewest impostor scores needed before a calibration is trusted"
    )
    max_probes: int = Field(
        5000, ge=10, le=10**7, description="enrolled images sampled as probes per calibration"
    )


class MatchLogConfig(Section):
    batch_size: int = Field(32, ge=1, le=100_000, description="tracks written per match-log transaction")
    retention_days: float | None = Field(
        None, gt=0.0, le=36_500, description="events and thumbnails older than this many days are purged"
    )
    heartbeat_s: float = Field(
        5.0,
        ge=0.05,
        le=3600,
        description="seconds between a run's heartbeats: its liveness, and how often its progress is committed",
    )


class ServeConfig(Section):
    host: str = Field(
        "127.0.0.1", min_length=1, max_length=255, description="address the HTTP server listens on"
    )
    port: int = Field(8000, ge=1, le=65535, description="TCP port of the HTTP server")
    token: str | None = Field(
        None,
        min_length=8,
        max_length=512,
        description="API token; FACEMOE_API_TOKEN overrides; none means loopback only",
    )
    session_max_age_s: int = Field(
        12 * 3600,
        ge=60,
        le=30 * 86400,
        description="seconds a browser's login to the page lasts (its session cookie's Max-Age); a restart or "
        "a new token ends every session sooner",
    )
    page_size: int = Field(
        50, ge=1, le=1000, description="rows per page on the page and in the API by default"
    )
    allowed_hosts: tuple[str, ...] = Field(
        (),
        max_length=100,
        description="Host names the server answers to besides its listen address (and the loopback names when it "
        "listens on loopback); '*' allows any, which DNS rebinding can abuse",
    )
    max_upload_bytes: int = Field(
        10 * 2**20,
        ge=1024,
        le=2**30,
        description="largest photo the search by photo takes (bytes); a larger upload is refused with 413",
    )
    media_dirs: tuple[str, ...] = Field(
        (),
        max_length=100,
        description="absolute folders whose enrolled photos the API and page may show beside a match, each only "
        "while it holds the content that was enrolled; empty: enrolled photos are not shown (faces enrolled "
        "from tracks always are)",
    )

    @field_validator("media_dirs")
    @classmethod
    def _absolute(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        relative = [d for d in value if not Path(d).expanduser().is_absolute()]
        if relative:
            raise ValueError(f"expected absolute folders, got {relative[0]!r}")
        return tuple(str(Path(d).expanduser()) for d in value)


class UnknownsConfig(Section):
    """Grouping of recurring unknown tracks into persons (``gallery.unknowns``; docs/unknowns.md)."""

    threshold: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        description="cosine at or above which two groups of unknown tracks join (average linkage); none: the "
        "embedder's operating threshold (match.threshold, else the gallery's)",
    )
    min_size: int = Field(2, ge=1, le=10**9, description="smallest group listed; 1 lists single tracks too")
    neighbours: int = Field(
        20, ge=1, le=1000, description="candidate pairs per track: its most similar unknown tracks"
    )
    exact_up_to: int = Field(
        20_000,
        ge=0,
        le=10**8,
        description="up to this many tracks the candidate search is exact, above it an inverted file (IVF)",
    )
    cell_size: int = Field(
        100,
        ge=10,
        le=10**6,
        description="tracks per k-means cell of the inverted file (cells = tracks / this)",
    )
    probe: int = Field(16, ge=1, le=65_536, description="inverted-file cells searched per track")


class AuditConfig(Section):
    """The audit trail (``gallery.audit``; docs/audit.md)."""

    retention_days: float | None = Field(
        None,
        gt=0.0,
        le=36_500,
        description="audit entries older than this many days are deleted by purge (a retention entry keeps the "
        "chain verifiable); none: kept for ever; never shorter than match_log.retention_days",
    )
    head_file: str | None = Field(
        None,
        max_length=2000,
        description="file that keeps the chain's head outside a server database; default: STORAGE_DIR/<db "
        "name>.audit-head (a SQLite database keeps it beside its file)",
    )


class GalleryConfig(Section):
    db_url: str = Field(
        "sqlite:///facemoe.db",
        min_length=1,
        max_length=2000,
        description="SQLAlchemy URL: sqlite:///FILE or postgresql+psycopg://USER@HOST/DB",
    )
    storage_dir: str | None = Field(
        None,
        max_length=2000,
        description="folder of the index files and thumbnails; default: beside the "
        "SQLite file, none for a server database (index kept in memory)",
    )
    thumbnails_dir: str | None = Field(
        None, max_length=2000, description="thumbnail store; default: STORAGE_DIR/<db name>_thumbnails"
    )
    index: IndexConfig = Field(default_factory=IndexConfig, description="FAISS index")
    threshold: ThresholdConfig = Field(default_factory=ThresholdConfig, description="open-set threshold")
    match_log: MatchLogConfig = Field(
        default_factory=MatchLogConfig, description="match-log writing and retention"
    )
    serve: ServeConfig = Field(default_factory=ServeConfig, description="HTTP API and page")
    unknowns: UnknownsConfig = Field(
        default_factory=UnknownsConfig, description="grouping of recurring unknown tracks"
    )
    audit: AuditConfig = Field(default_factory=AuditConfig, description="the audit trail and its retention")

    @model_validator(mode="after")
    def _audit_outlives_match_log(self) -> GalleryConfig:
        audit, log = self.audit.retention_days, self.match_log.retention_days
        if audit is not None and (log is None or audit < log):
            floor = "none: kept for ever" if log is None else f"{log:g}"
            raise ValueError(
                f"audit.retention_days: expected at least match_log.retention_days ({floor}), got {audit:g}"
            )
        return self


def load_gallery_config(path: Path | str | None) -> GalleryConfig:
    """Read the ``gallery`` section of a YAML config file (defaults when ``path`` is None or has no
    section); a missing file, bad YAML or a bad key raises :class:`core.errors.ConfigError`."""
    if path is None:
        return GalleryConfig()
    data = read_yaml(path, "config file")
    return validate(GalleryConfig, data.get("gallery") or {}, str(path), prefix="gallery")
