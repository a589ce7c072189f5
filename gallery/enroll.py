"""Enrollment: images (a folder of identity subfolders, a labels file, or explicit files), template files, or
logged tracks (their fused templates, :meth:`Enroller.enroll_tracks`, refused when they look like someone else:
:mod:`gallery.from_tracks`). Each media row is stored with its kind: ``image``, ``template`` or ``track``.

Face finding and embedding are injected, so this module knows no detector or model:

- ``extract_faces(image) -> list[(crop, quality)]``: every face of a BGR uint8 image as an aligned 112x112 BGR
  crop with a quality score (higher is better);
- an :class:`Embedder`: ``embedder_id``, ``dim`` and ``embed(crops) -> (unit features [N, dim], norms [N])``.

Every image is read and hashed before anything is written: an unreadable image, or a folder with no images,
refuses the whole request with :class:`EnrollmentError` and writes nothing. Images already enrolled (same
content, same embedder) are no-ops; images with no face, several faces or too low quality are reported and not
enrolled. Each identity is written in one transaction (its media, its fused template, the gallery version),
and the open-set threshold is recalibrated at the end.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from core.images import decode_image
from gallery.enroll_inputs import IMAGE_SUFFIXES, folder_images, read_labels
from gallery.errors import EnrollmentError, IdentityExistsError
from gallery.from_tracks import refuse_doubts, track_doubts, track_media
from gallery.media import MediaVector
from gallery.names import identity_name, lookup_name
from gallery.store import Gallery
from gallery.thresholds import Calibration

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_SUFFIXES",
    "Embedder",
    "EnrollReport",
    "Enroller",
    "FaceExtractor",
    "ImageOutcome",
    "Photo",
    "folder_images",
    "read_labels",
    "save_template_file",
]

FaceExtractor = Callable[[np.ndarray], Sequence[tuple[np.ndarray, float]]]


class Embedder(Protocol):
    embedder_id: str
    dim: int

    def embed(self, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class ImageOutcome:
    """What happened to one input: ``status`` is ``enrolled``, ``duplicate``, ``no_face``, ``several_faces``,
    ``low_quality`` or ``conflict`` (the same content is enrolled under another identity)."""

    identity: str
    path: str
    status: str
    detail: str = ""
    content_hash: str = ""


@dataclass
class EnrollReport:
    outcomes: list[ImageOutcome] = field(default_factory=list)
    calibration: Calibration | None = None

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def problems(self) -> list[ImageOutcome]:
        return [o for o in self.outcomes if o.status not in ("enrolled", "duplicate")]

    @property
    def enrolled(self) -> dict[str, list[str]]:
        """Identity name -> content hashes of the media this request added (what a rematch is caused by)."""
        out: dict[str, list[str]] = {}
        for o in self.outcomes:
            if o.status == "enrolled":
                out.setdefault(o.identity, []).append(o.content_hash)
        return out


Photo = tuple[str, bytes]  # an uploaded image: (its name, stored as the media's path; its content)


@dataclass(frozen=True)
class _Image:
    path: str
    content_hash: str
    image: np.ndarray


def _read(item: Path | Photo) -> _Image:
    """An image file, or an uploaded :data:`Photo`, read and decoded."""
    if isinstance(item, tuple):
        label, data = item
    else:
        label = str(item)
        try:
            data = Path(item).read_bytes()
        except OSError as exc:
            raise EnrollmentError(f"cannot read image {label}: {exc.strerror or exc}") from exc
    image = decode_image(data, f"image {label}", EnrollmentError)  # the one pixel cap, before decoding
    return _Image(label, hashlib.sha256(data).hexdigest(), image)


class Enroller:
    """Enrolls into ``gallery`` with the injected face extractor and embedder; ``min_quality`` rejects worse
    faces. Every identity name is checked (:func:`gallery.names.identity_name`) before anything is written."""

    add_option = "add=True"  # how messages name "enroll into an existing identity" (the command line: --add)

    def __init__(
        self, gallery: Gallery, extract_faces: FaceExtractor, embedder: Embedder, min_quality: float = 0.0
    ) -> None:
        self.gallery, self.extract_faces, self.embedder, self.min_quality = (
            gallery,
            extract_faces,
            embedder,
            min_quality,
        )

    def enroll_images(
        self,
        name: str,
        paths: Sequence[Path | Photo],
        *,
        add: bool = False,
        exist_ok: bool = False,
        external_id: str | None = None,
        watchlist: bool = False,
        notes: str = "",
    ) -> EnrollReport:
        """Enroll ``paths`` (image files, or uploaded :data:`Photo` ``(name, bytes)``) as identity ``name``
        (:func:`gallery.names.identity_name`): a new identity unless ``add`` (then it must exist; a name stored
        before the rule is still found, :func:`gallery.names.lookup_name`); ``exist_ok``: a new identity, or more
        images of an existing one."""
        name = lookup_name(name) if add else identity_name(name)
        if not paths:
            raise EnrollmentError(f"identity {name!r}: expected at least one image, got none")
        exists = self._exists(name, add, "images", exist_ok)
        return self._enroll(
            {name: [p if isinstance(p, tuple) else Path(p) for p in paths]},
            create={name: not exists},
            meta=dict(external_id=external_id, watchlist=watchlist, notes=notes),
            exist_ok=exist_ok,
        )

    def _exists(self, name: str, add: bool, what: str, exist_ok: bool = False) -> bool:
        """Whether ``name`` exists, refusing a taken name without ``add`` and an unknown one with it (unless
        ``exist_ok``); messages name the option as :attr:`add_option`."""
        exists = self.gallery.has_identity(name)
        if exist_ok:
            return exists
        if exists and not add:
            raise IdentityExistsError(
                f"identity {name!r} already exists (use {self.add_option} to enroll more {what} of it)"
            )
        if add and not exists:
            raise EnrollmentError(
                f"identity {name!r}: {self.add_option} expects an existing identity, got an unknown name"
            )
        return exists

    def enroll_tracks(
        self,
        name: str,
        refs: Sequence[str],
        *,
        add: bool = False,
        external_id: str | None = None,
        watchlist: bool = False,
        notes: str = "",
        threshold: float | None = None,
        force: bool = False,
    ) -> EnrollReport:
        """Enroll ``name`` from logged tracks (``refs``: ``RUN:TRACK`` each): their fused templates are its media
        (:func:`gallery.from_tracks.track_media`, kind ``track``), fused as images are. A reference that is not
        ``RUN:TRACK``, an unknown track, or one of another embedder refuses the request before anything is
        written; so does a doubtful track (:func:`gallery.from_tracks.track_doubts` at ``threshold``, the
        operating threshold, default the gallery's own) unless ``force``."""
        name = lookup_name(name) if add else identity_name(name)
        embedder_id = self.embedder.embedder_id
        items = track_media(self.gallery, refs, embedder_id)
        exists = self._exists(name, add, "tracks")
        if not force:
            at = self.gallery.threshold_in_force(embedder_id, threshold).value
            refuse_doubts(name, track_doubts(self.gallery, name, items, embedder_id, at))
        meta = {} if exists else dict(external_id=external_id, watchlist=watchlist, notes=notes)
        return self._add_vectors(name, items, not exists, meta)

    def _add_vectors(self, name: str, items: list[MediaVector], create: bool, meta: dict) -> EnrollReport:
        statuses = self.gallery.add_media(name, self.embedder.embedder_id, items, create=create, **meta)
        report = EnrollReport(
            [
                ImageOutcome(name, item.path, *s.partition(": ")[::2], item.content_hash)
                for item, s in zip(items, statuses)
            ]
        )
        if report.count("enrolled"):
            report.calibration = self.gallery.calibrate(self.embedder.embedder_id)
        return report

    def enroll_folder(self, root: Path) -> EnrollReport:
        """Enroll every ``root/<identity>/<image>``; existing identities get the new images."""
        return self._enroll_many(folder_images(root))

    def enroll_labels(self, labels_file: Path) -> EnrollReport:
        """Enroll the images named by a labels file (see :func:`read_labels`)."""
        return self._enroll_many(read_labels(labels_file))

    def _enroll_many(self, found: dict[str, list[Path]]) -> EnrollReport:
        groups: dict[str, list[Path]] = {}
        for given, paths in found.items():  # every name checked before anything is written
            groups.setdefault(identity_name(given, f"identity name of {paths[0]}"), []).extend(paths)
        # another command may create one of these identities meanwhile: it then gets these images too
        create = {name: not self.gallery.has_identity(name) for name in groups}
        return self._enroll(groups, create=create, meta={}, exist_ok=True)

    def _enroll(
        self,
        groups: dict[str, list[Path | Photo]],
        create: dict[str, bool],
        meta: dict,
        exist_ok: bool = False,
    ) -> EnrollReport:
        # all or nothing: every image must decode before anything is written (decoded again per identity
        # below, so memory holds one identity's images at a time)
        hashes = {name: [_read(p).content_hash for p in paths] for name, paths in groups.items()}
        report = EnrollReport()
        for name, paths in groups.items():
            items = [_read(p) for p in paths]
            changed = [i.path for i, h in zip(items, hashes[name]) if i.content_hash != h]
            if changed:
                raise EnrollmentError(f"image {changed[0]}: expected the checked content, got a changed file")
            outcomes, vectors = self._embed_identity(name, items)
            statuses = (
                self.gallery.add_media(
                    name,
                    self.embedder.embedder_id,
                    [v for _, v in vectors],
                    create=create[name],
                    exist_ok=exist_ok,
                    **(meta if create[name] else {}),
                )
                if vectors
                else []
            )
            for (path, vector), status in zip(vectors, statuses):
                kind, _, detail = status.partition(": ")
                outcomes.append(ImageOutcome(name, path, kind, detail, vector.content_hash))
            if create[name] and not {"enrolled", "duplicate"} & {o.status for o in outcomes}:
                outcomes.append(
                    ImageOutcome(name, "", "not_created", "no usable image: identity not created")
                )
            report.outcomes.extend(outcomes)
        if report.count("enrolled"):
            report.calibration = self.gallery.calibrate(self.embedder.embedder_id)
        for problem in report.problems:  # the report carries them; its callers show them
            logger.info("%s %s: %s %s", problem.identity, problem.path, problem.status, problem.detail)
        return report

    def _embed_identity(self, name: str, items: list[_Image]):
        outcomes, accepted = [], []
        known = self.gallery.known_hashes(self.embedder.embedder_id, [i.content_hash for i in items])
        for item in items:
            owner = known.get(item.content_hash)
            if owner is not None:
                status, detail = (
                    ("duplicate", "already enrolled")
                    if owner == name
                    else ("conflict", f"already enrolled as {owner!r}")
                )
                outcomes.append(ImageOutcome(name, str(item.path), status, detail))
                continue
            faces = list(self.extract_faces(item.image))
            if not faces:
                outcomes.append(ImageOutcome(name, str(item.path), "no_face", "no face found"))
            elif len(faces) > 1:
                outcomes.append(
                    ImageOutcome(
                        name, str(item.path), "several_faces", f"expected one face, found {len(faces)}"
                    )
                )
            elif faces[0][1] < self.min_quality:
                outcomes.append(
                    ImageOutcome(
                        name,
                        str(item.path),
                        "low_quality",
                        f"quality {faces[0][1]:.3f} below {self.min_quality:.3f}",
                    )
                )
            else:
                accepted.append((item, faces[0]))
        vectors = []
        if accepted:
            feats, norms = self.embedder.embed([face[0] for _, face in accepted])
            if feats.shape != (len(accepted), self.embedder.dim):
                raise EnrollmentError(
                    f"embedder {self.embedder.embedder_id}: expected features "
                    f"[{len(accepted)}, {self.embedder.dim}], got {list(feats.shape)}"
                )
            for (item, (_, quality)), feat, norm in zip(accepted, feats, norms):
                vectors.append(
                    (
                        str(item.path),
                        MediaVector(str(item.path), item.content_hash, float(quality), feat, float(norm)),
                    )
                )
        return outcomes, vectors

    def enroll_template_file(self, name: str, path: Path, *, add: bool = False) -> EnrollReport:
        """Enroll a template file: ``.npz`` with ``embedder_id`` (str), ``embedding`` ``[D]`` or ``[N, D]``
        and optional ``norms`` ``[N]``; it must come from this enroller's embedder."""
        name = lookup_name(name) if add else identity_name(name)
        path = Path(path)
        try:
            data = path.read_bytes()
            with np.load(path, allow_pickle=False) as npz:
                embedder_id = str(npz["embedder_id"])
                vectors = np.atleast_2d(np.asarray(npz["embedding"], np.float32))
                norms = np.asarray(npz["norms"], np.float32) if "norms" in npz else np.ones(len(vectors))
        except (OSError, ValueError, KeyError) as exc:
            raise EnrollmentError(
                f"template file {path}: expected an .npz with embedder_id and embedding ({exc})"
            ) from exc
        if embedder_id != self.embedder.embedder_id:
            raise EnrollmentError(
                f"template file {path}: expected embedder {self.embedder.embedder_id!r}, got "
                f"{embedder_id!r}; templates of different embedders never mix"
            )
        if (
            vectors.ndim != 2
            or vectors.shape[1] != self.embedder.dim
            or norms.shape != (len(vectors),)
            or not np.isfinite(vectors).all()
            or (np.linalg.norm(vectors, axis=1) == 0).any()
        ):
            raise EnrollmentError(
                f"template file {path}: expected finite non-zero embedding [N, "
                f"{self.embedder.dim}] and norms [N], got {list(vectors.shape)} and "
                f"{list(norms.shape)}"
            )
        exists = self.gallery.has_identity(name)
        if exists and not add:
            raise IdentityExistsError(
                f"identity {name!r} already exists (use {self.add_option} to add this template to it)"
            )
        digest = hashlib.sha256(data).hexdigest()
        units = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        items = [
            MediaVector(
                f"{path}#{i}",
                hashlib.sha256(f"{digest}:{i}".encode()).hexdigest(),
                1.0,
                u,
                float(w),
                "template",
            )
            for i, (u, w) in enumerate(zip(units, norms))
        ]
        return self._add_vectors(name, items, not exists, {})


def save_template_file(
    path: Path, embedder_id: str, embedding: np.ndarray, norms: np.ndarray | None = None
) -> None:
    """Write a template file that :meth:`Enroller.enroll_template_file` reads."""
    extra = {} if norms is None else {"norms": np.asarray(norms, np.float32)}
    np.savez(path, embedder_id=np.array(embedder_id), embedding=np.asarray(embedding, np.float32), **extra)
