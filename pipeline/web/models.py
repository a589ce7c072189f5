"""Response models and options of the web app's JSON endpoints: what the OpenAPI schema says of them and what every
answer is checked against."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from gallery.queries import MAX_PAGE_SIZE
from pipeline.web.common import TIME

__all__ = [
    "Candidate",
    "IdentityPage",
    "IdentityRow",
    "MatchPage",
    "MatchRow",
    "ReviewMark",
    "TrackPage",
    "TrackRow",
    "EnrolledFace",
    "TrackFields",
    "SearchOptions",
    "SearchPage",
    "SearchRow",
    "TimelinePage",
    "TimelineRow",
    "TrackDetail",
    "UnknownGroupRow",
    "UnknownTrackRow",
    "UnknownsResult",
]


class TrackFields(BaseModel):
    """What every row of a track starts with (:func:`gallery.queries.track_fields`)."""

    ref: str = Field(
        description="the track's reference RUN:TRACK (GET /api/tracks/{ref}, enroll --from-track)"
    )
    seen_start: str | None = Field(description="wall clock of its first frame, ISO 8601; none when unknown")
    seen_end: str | None = Field(description="wall clock of its last frame, ISO 8601; none when unknown")
    time_origin: str = Field(
        description="where the sighting times come from: given, container, filename, camera or unknown"
    )
    start_time: float | None = Field(
        description="seconds within the file or stream of the track's first frame"
    )
    end_time: float | None = Field(description="seconds within the file or stream of the track's last frame")
    logged_at: str | None = Field(description="when the track was logged (processing time), ISO 8601 UTC")
    run_id: int = Field(description="run that logged the track")
    track_id: int = Field(description="track number within its run")


class ReviewMark(BaseModel):
    """A person's review of a decision (:mod:`gallery.review_state`); it never rewrites the logged decision."""

    kind: str = Field(description="what was reviewed: match, retro (a retroactive match), alert or unknown")
    verdict: str = Field(description="confirmed, rejected (not that person), acknowledged or named")
    identity: str | None = Field(description="the identity judged, or the name given to an unknown track")
    reviewer: str = Field(description="who reviewed it")
    note: str | None = Field(description="why")
    at: str | None = Field(description="when, ISO 8601 UTC")


class SearchOptions(BaseModel):
    face: int | None = Field(None, ge=1, le=1000, description="in a photo of several faces, the N-th largest")
    top: int = Field(10, ge=1, le=MAX_PAGE_SIZE, description="how many tracks to list")
    min_score: float | None = Field(None, ge=-1.0, le=1.0, description="only tracks scoring at least this")
    source: str | None = Field(None, max_length=500, description="only tracks of this source")
    since: str | None = Field(
        None, description=f"only tracks seen from this {TIME}", json_schema_extra={"format": "date-time"}
    )
    until: str | None = Field(
        None, description=f"only tracks seen before this {TIME}", json_schema_extra={"format": "date-time"}
    )


class SearchRow(TrackFields):
    score: float = Field(description="cosine of the track's template to the photo's")
    source: str = Field(description="file or camera name")
    kind: str = Field(description="file or camera")
    decision: str = Field(
        description="the track's current decision (a later retroactive match, else the logged one)"
    )
    identity: str | None = Field(description="identity it is matched to")
    retroactive: bool = Field(False, description="the decision is a retroactive match (a later rematch)")
    thumbnail: str | None = Field(description="thumbnail path under /thumbnails/")
    thumbnail_url: str | None = Field(description="URL of the track's best crop")


class SearchPage(BaseModel):
    rows: list[SearchRow] = Field(description="tracks, best score first")
    page: int = Field(description="always 1")
    page_size: int = Field(description="the top asked for")
    has_more: bool = Field(description="always false")


class TimelineRow(TrackFields):
    identity: str = Field(description="the identity")
    source: str = Field(description="file or camera name")
    kind: str = Field(description="file or camera")
    score: float | None = Field(description="score of the match")
    retroactive: bool = Field(description="named later by a rematch")
    rematch_id: int | None = Field(description="the rematch that named it")
    decided_at: str | None = Field(description="time of the decision")
    review: ReviewMark | None = Field(None, description="the review of this decision (none: not reviewed)")
    reviewed: str | None = Field(None, description="the review's verdict alone")
    thumbnail: str | None = Field(description="thumbnail path under /thumbnails/")
    thumbnail_url: str | None = Field(description="URL of the track's best crop")


class TimelinePage(BaseModel):
    rows: list[TimelineRow] = Field(description="sightings, oldest first")
    page: int = Field(ge=1, description="page number, from 1")
    page_size: int = Field(ge=1, le=MAX_PAGE_SIZE, description="rows per page")
    has_more: bool = Field(description="another page follows")


class UnknownTrackRow(TrackFields):
    source: str = Field(description="file or camera name")
    frames: int = Field(description="frames in the track")
    crops_embedded: int = Field(description="crops embedded into its template")
    thumbnail: str | None = Field(description="thumbnail path under /thumbnails/")
    thumbnail_url: str | None = Field(description="URL of the track's best crop")


class UnknownGroupRow(BaseModel):
    group: int = Field(description="group number, largest group first")
    size: int = Field(description="tracks in the group")
    first_seen: str | None = Field(description="earliest sighting of its tracks; none when no time is known")
    last_seen: str | None = Field(description="latest sighting of its tracks; none when no time is known")
    sources: list[str] = Field(description="files and cameras it was seen in")
    mean_similarity: float | None = Field(description="mean cosine between its tracks")
    best: str = Field(description="reference of the track whose thumbnail shows the person best")
    thumbnail: str | None = Field(description="that track's thumbnail path")
    thumbnail_url: str | None = Field(description="URL of that track's thumbnail")
    tracks: list[UnknownTrackRow] = Field(description="its tracks, in the order logged")


class UnknownsResult(BaseModel):
    embedder_id: str | None = Field(description="embedder of the grouped tracks")
    threshold: float | None = Field(description="cosine at which groups joined")
    min_size: int = Field(description="smallest group listed")
    tracks: int = Field(description="unknown tracks grouped")
    singletons: int = Field(description="tracks alone in their group")
    groups: list[UnknownGroupRow] = Field(description="groups, largest first")


class EnrolledFace(BaseModel):
    media_id: int = Field(description="enrolled media id (GET /media/{id})")
    identity: str = Field(description="the identity")
    enrolled_from: str = Field(
        description="file name of the enrolled photo, or the track it was enrolled from"
    )
    enrolled_at: str | None = Field(description="time of enrollment")
    score: float = Field(description="cosine of the track's template to this media's vector")
    url: str | None = Field(description="URL of the enrolled face; none when this server does not show it")
    note: str | None = Field(description="why it is not shown")


class TrackDetail(TrackFields):
    source: str = Field(description="file or camera name")
    kind: str = Field(description="file or camera")
    frames: int = Field(description="frames in the track")
    crops_embedded: int = Field(description="crops embedded into its template")
    embedder_id: str = Field(description="embedder of its template")
    thumbnail: str | None = Field(description="thumbnail path under /thumbnails/")
    thumbnail_url: str | None = Field(description="URL of the track's best crop")
    decision: str | None = Field(description="current decision (a retroactive match, else the logged one)")
    score: float | None = Field(description="score of the current decision")
    identity: str | None = Field(description="identity of a current match")
    retroactive: bool = Field(description="the current decision is a retroactive match")
    rematch_id: int | None = Field(description="the rematch that made it")
    logged_decision: str | None = Field(description="what was decided when the track ended")
    logged_identity: str | None = Field(description="who was matched then")
    logged_score: float | None = Field(description="best score then")
    review: ReviewMark | None = Field(None, description="the review of this decision (none: not reviewed)")
    reviewed: str | None = Field(None, description="the review's verdict alone")
    enrolled: EnrolledFace | None = Field(description="for a match: the enrolled face closest to the track")
    snapshot: str | None = Field(None, description="context snapshot path under /thumbnails/; none when none")
    snapshot_url: str | None = Field(None, description="URL of the context snapshot (the whole frame)")
    clip_url: str | None = Field(
        None, description="URL of the track's clip (MP4); none when this server cuts none"
    )
    clip_start_s: float | None = Field(
        None, ge=0, description="seconds into the clip where the track starts (the sighting)"
    )
    export_url: str | None = Field(None, description="URL that POSTed answers the evidence export (zip)")
    zones: list[str] | None = Field(
        None, description="names of the camera zones the track entered; none where its camera has no zones"
    )


class Candidate(BaseModel):
    identity_id: int = Field(description="identity id at the time of the match")
    name: str = Field(description="identity name at the time of the match")
    score: float = Field(description="cosine similarity")


class MatchRow(TrackFields):
    id: int = Field(description="match event id")
    at: str | None = Field(description="time of the decision, ISO 8601 UTC")
    source: str = Field(description="file or camera name")
    identity: str | None = Field(description="matched identity, none for unknown")
    identity_id: int | None = Field(description="matched identity id")
    score: float | None = Field(description="best candidate's score")
    decision: Literal["match", "unknown"] = Field(description="open-set decision")
    threshold: float | None = Field(description="operating threshold of the decision")
    candidates: list[Candidate] | None = Field(description="top-k candidates, best first")
    thumbnail: str | None = Field(description="thumbnail path under /thumbnails/")
    retroactive: bool = Field(
        False, description="named later by a rematch (the track's match event is unchanged)"
    )
    rematch_id: int | None = Field(None, description="the rematch that named it (retroactive matches)")
    review: ReviewMark | None = Field(None, description="the review of this decision (none: not reviewed)")
    reviewed: str | None = Field(None, description="the review's verdict alone")
    zones: list[str] | None = Field(
        None, description="names of the camera zones the track entered; none where its camera has no zones"
    )


class TrackRow(TrackFields):
    source: str = Field(description="file or camera name")
    frames: int = Field(description="frames in the track")
    crops_embedded: int = Field(description="crops embedded into the template")
    embedder_id: str = Field(description="embedder of the template")
    decision: Literal["match", "unknown"] | None = Field(description="open-set decision")
    score: float | None = Field(description="best candidate's score")
    identity: str | None = Field(description="matched identity")
    thumbnail: str | None = Field(description="thumbnail path under /thumbnails/")
    retroactive: bool = Field(False, description="the decision is a retroactive match (a later rematch)")
    logged_decision: Literal["match", "unknown"] | None = Field(None, description="what was decided then")
    logged_identity: str | None = Field(None, description="who was matched then")
    review: ReviewMark | None = Field(None, description="the review of this decision (none: not reviewed)")
    reviewed: str | None = Field(None, description="the review's verdict alone")
    zones: list[str] | None = Field(
        None, description="names of the camera zones the track entered; none where its camera has no zones"
    )


class IdentityRow(BaseModel):
    id: int = Field(description="identity id")
    name: str = Field(description="identity name")
    external_id: str | None = Field(description="id in another system")
    watchlist: bool = Field(description="on the watch list")
    notes: str | None = Field(description="free text")
    media: int = Field(ge=0, description="enrolled images")
    created_at: str | None = Field(description="time of enrollment, ISO 8601 UTC")
    embedders: list[str] = Field(description="embedders with a template of this identity")


class _Page(BaseModel):
    page: int = Field(ge=1, description="page number, from 1")
    page_size: int = Field(ge=1, le=MAX_PAGE_SIZE, description="rows per page")
    has_more: bool = Field(description="another page follows")


class MatchPage(_Page):
    rows: list[MatchRow] = Field(description="match events, newest first")


class TrackPage(_Page):
    rows: list[TrackRow] = Field(description="tracks, newest first")


class IdentityPage(_Page):
    rows: list[IdentityRow] = Field(description="identities, newest first")
