"""Watch lists in SQL (:mod:`gallery.watchlist_models`): create, change and remove lists, put identities on them or
take them off, list members, and the rules an alert decision reads (:func:`watch_rules`); also renaming an
identity and its ``watchlist`` flag, the default list.

The default list ``default`` (:data:`gallery.watchlist_models.DEFAULT_LIST`) is the ``identities.watchlist``
flag: joining it sets the flag, leaving it clears it. Its threshold and cameras come from a ``watchlists`` row
of that name when one exists (else: the threshold in force, every camera). Names of lists and cameras follow the
identity names' rule (:func:`gallery.names.identity_name`). Every change is one transaction.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from gallery.db import Database
from gallery.errors import EnrollmentError, IdentityExistsError, QueryError
from gallery.models import Identity
from gallery.names import identity_name, lookup_name, quoted
from gallery.records import bump_version, get_identity
from gallery.watchlist_models import DEFAULT_LIST, Watchlist, WatchlistMember

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_LIST",
    "ListRule",
    "WatchlistInfo",
    "add_watchlist",
    "join_watchlist",
    "leave_watchlist",
    "list_members",
    "list_watchlists",
    "remove_watchlist",
    "rename_identity",
    "set_watchlist_flag",
    "watch_rules",
]

MAX_CAMERAS = 1000  # cameras one list names


@dataclass(frozen=True)
class ListRule:
    """When a match on a member of list ``name`` alerts: its score at least ``threshold`` (None: the threshold in
    force) on one of ``cameras`` (None: any)."""

    name: str
    threshold: float | None = None
    cameras: frozenset[str] | None = None

    def applies(self, camera: str, score: float) -> bool:
        """Whether a match of ``score`` on ``camera`` alerts under this list."""
        in_scope = self.cameras is None or camera in self.cameras
        return in_scope and (self.threshold is None or score >= self.threshold)


@dataclass(frozen=True)
class WatchlistInfo:
    name: str
    threshold: float | None
    cameras: tuple[str, ...] | None
    members: int

    def as_row(self) -> dict:
        cameras = None if self.cameras is None else list(self.cameras)
        return {"name": self.name, "threshold": self.threshold, "cameras": cameras, "members": self.members}


def _threshold(value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and -1.0 <= value <= 1.0):
        raise QueryError(f"watch list threshold: expected a cosine score in [-1, 1], got {value!r}")
    return value


def _cameras(cameras: Sequence[str] | None) -> list[str] | None:
    if cameras is None:
        return None
    if not cameras or len(cameras) > MAX_CAMERAS:
        raise QueryError(
            f"watch list cameras: expected 1-{MAX_CAMERAS} camera names (none: every camera), got {len(cameras)}"
        )
    return sorted({identity_name(c, "camera name") for c in cameras})


def add_watchlist(
    db: Database, name: str, threshold: float | None = None, cameras: Sequence[str] | None = None
) -> None:
    """Create the list ``name`` (``default`` too: then it gives the default list its threshold and cameras); a
    taken name raises :class:`IdentityExistsError`."""
    name = identity_name(name, "watch list name")
    row = Watchlist(name=name, threshold=_threshold(threshold), cameras=_cameras(cameras))
    try:
        with db.session() as session:
            if session.scalar(select(Watchlist.id).where(Watchlist.name == name)) is not None:
                raise IdentityExistsError(f"watch list {name!r} already exists (remove it first)")
            session.add(row)
    except IntegrityError as exc:  # created by another command since the read above
        raise IdentityExistsError(f"watch list {name!r} already exists (remove it first)") from exc
    logger.info("watch list %r added (threshold %s, cameras %s)", name, threshold, cameras)


def _get(session, name: str) -> Watchlist:
    name = lookup_name(name, "watch list name")
    row = session.scalar(select(Watchlist).where(Watchlist.name == name))
    if row is None:
        raise QueryError(
            f"watch list {quoted(name)}: expected an existing list (see 'watchlist list'), got none"
        )
    return row


def remove_watchlist(db: Database, name: str) -> None:
    """Remove the list ``name`` and its memberships (the identities stay); removing ``default`` only drops its
    threshold and cameras."""
    with db.session() as session:
        session.delete(_get(session, name))


def set_watchlist_flag(db: Database, name: str, on: bool) -> bool:
    """Put identity ``name`` on the default list (``on``) or take it off; returns whether the flag changed."""
    with db.session() as session:
        identity = get_identity(session, name)
        changed = identity.watchlist != bool(on)
        identity.watchlist = bool(on)
    return changed


def join_watchlist(db: Database, listname: str, names: Iterable[str]) -> list[str]:
    """Put the identities ``names`` on the list (``default``: their flag); returns those newly on it. An unknown
    identity or list changes nothing."""
    return _membership(db, listname, names, True)


def leave_watchlist(db: Database, listname: str, names: Iterable[str]) -> list[str]:
    """Take the identities ``names`` off the list; returns those that were on it."""
    return _membership(db, listname, names, False)


def _membership(db: Database, listname: str, names: Iterable[str], on: bool) -> list[str]:
    names = list(names)
    if not names:
        raise EnrollmentError("watch list: expected at least one identity name, got none")
    default = lookup_name(listname, "watch list name") == DEFAULT_LIST
    changed = []
    with db.session() as session:
        identities = [get_identity(session, n) for n in names]
        if default:
            for identity in identities:
                if identity.watchlist != on:
                    identity.watchlist = on
                    changed.append(identity.name)
            return changed
        row = _get(session, listname)
        current = set(
            session.scalars(select(WatchlistMember.identity_id).where(WatchlistMember.watchlist_id == row.id))
        )
        for identity in identities:
            if on and identity.id not in current:
                session.add(WatchlistMember(watchlist_id=row.id, identity_id=identity.id))
                current.add(identity.id)
                changed.append(identity.name)
            elif not on and identity.id in current:
                session.execute(
                    delete(WatchlistMember).where(
                        WatchlistMember.watchlist_id == row.id, WatchlistMember.identity_id == identity.id
                    )
                )
                current.discard(identity.id)
                changed.append(identity.name)
    return changed


def list_members(db: Database, listname: str) -> list[str]:
    """The names of the identities on the list, sorted."""
    with db.session() as session:
        if lookup_name(listname, "watch list name") == DEFAULT_LIST:
            stmt = select(Identity.name).where(Identity.watchlist.is_(True))
        else:
            row = _get(session, listname)
            stmt = (
                select(Identity.name)
                .join(WatchlistMember, WatchlistMember.identity_id == Identity.id)
                .where(WatchlistMember.watchlist_id == row.id)
            )
        return sorted(session.scalars(stmt))


def list_watchlists(db: Database) -> list[WatchlistInfo]:
    """Every list by name, the default list first (whether or not it has a row)."""
    with db.session() as session:
        rows = {r.name: r for r in session.scalars(select(Watchlist))}
        counts: dict[int, int] = {}
        for list_id in session.scalars(select(WatchlistMember.watchlist_id)):
            counts[list_id] = counts.get(list_id, 0) + 1
        flagged = len(session.scalars(select(Identity.id).where(Identity.watchlist.is_(True))).all())
    default = rows.pop(DEFAULT_LIST, None)
    out = [
        WatchlistInfo(
            DEFAULT_LIST,
            default.threshold if default else None,
            tuple(default.cameras) if default and default.cameras is not None else None,
            flagged,
        )
    ]
    for name in sorted(rows):
        r = rows[name]
        cameras = tuple(r.cameras) if r.cameras is not None else None
        out.append(WatchlistInfo(name, r.threshold, cameras, counts.get(r.id, 0)))
    return out


def watch_rules(db: Database, configured: Iterable[str] = ()) -> dict[str, tuple[ListRule, ...]]:
    """Identity name -> the rules of every list it is on: the default list for flagged identities and the names
    ``configured`` (``live.alerts.watchlist``), and each list it is a member of."""
    with db.session() as session:
        lists = {r.id: r for r in session.scalars(select(Watchlist))}
        flagged = set(session.scalars(select(Identity.name).where(Identity.watchlist.is_(True))))
        members = session.execute(
            select(WatchlistMember.watchlist_id, Identity.name).join(
                Identity, Identity.id == WatchlistMember.identity_id
            )
        ).all()

    def rule(row: Watchlist | None, name: str) -> ListRule:
        if row is None:
            return ListRule(name)
        cameras = None if row.cameras is None else frozenset(row.cameras)
        return ListRule(row.name, row.threshold, cameras)

    default = rule(next((r for r in lists.values() if r.name == DEFAULT_LIST), None), DEFAULT_LIST)
    rules: dict[str, list[ListRule]] = {name: [default] for name in flagged | set(configured)}
    for list_id, name in members:
        if lists[list_id].name != DEFAULT_LIST:
            rules.setdefault(name, []).append(rule(lists[list_id], lists[list_id].name))
    return {name: tuple(found) for name, found in rules.items()}


def rename_identity(db: Database, name: str, new_name: str) -> str:
    """Rename identity ``name`` to ``new_name`` (the identity names' rule; a taken name raises
    :class:`IdentityExistsError`), bumping the gallery version so every search index maps ids to the new name;
    returns the new name."""
    new_name = identity_name(new_name)
    with db.session() as session:
        identity = get_identity(session, name)
        if new_name == identity.name:
            return new_name
        if session.scalar(select(Identity.id).where(Identity.name == new_name)) is not None:
            raise IdentityExistsError(
                f"identity {new_name!r} already exists (merge into it instead, or pick another name)"
            )
        session.execute(update(Identity).where(Identity.id == identity.id).values(name=new_name))
        bump_version(session)
    logger.info("renamed identity %r to %r", name, new_name)
    return new_name
