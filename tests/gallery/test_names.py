"""gallery/names.py: the one rule for identity names, applied by every way a name is stored, on SQLite and
PostgreSQL; quoting and table cells that cannot forge rows."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sqlalchemy import func, select

from gallery.enroll import Enroller
from gallery.errors import EnrollmentError, IdentityNotFoundError
from gallery.models import Identity
from gallery.names import MAX_NAME, QUOTED, identity_name, lookup_name, quoted, shown
from gallery.store import Gallery
from tests.gallery.helpers import media, unit
from tests.gallery.test_enroll import ProjectionEmbedder, blobs, face_image

BAD_NAMES = {
    "NUL": ("Ann\x00Lee", "control character U+0000"),
    "newline": ("Ann\nbob  2026  match", "control character U+000A"),
    "ESC": ("\x1b[2JAnn", "control character U+001B"),
    "DEL": ("Ann\x7f", "control character U+007F"),
    "right-to-left override": ("Ann\u202eeeL", "bidi format character U+202E"),
    "isolate": ("\u2066Ann", "bidi format character U+2066"),
    "right-to-left mark": ("Ann\u200f", "bidi format character U+200F"),
    "arabic letter mark": ("Ann\u061c", "bidi format character U+061C"),
    "100k characters": ("A" * 100_000, "expected 1-200 characters"),
    "201 characters": ("A" * 201, "expected 1-200 characters"),
    "empty": ("", "expected 1-200 characters"),
    "whitespace only": (" \t ", "expected 1-200 characters"),
}


@pytest.mark.parametrize("name, reason", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_bad_names_are_refused_with_a_short_quote(name, reason):
    with pytest.raises(EnrollmentError, match=re.escape(reason)) as info:
        identity_name(name)
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message and "\x00" not in message and "\u202e" not in message
    assert len(message) < 200  # the 100k name is quoted in at most QUOTED characters


@pytest.mark.parametrize(
    "name, kept",
    [
        ("  Ann Lee \t", "Ann Lee"),
        ("Zoë Ørsted", "Zoë Ørsted"),
        ("محمد", "محمد"),  # right-to-left letters are text, not reordering controls
        ("李小龍", "李小龍"),
        ("O'Brien-Smith Jr.", "O'Brien-Smith Jr."),
        ("A" * MAX_NAME, "A" * MAX_NAME),
    ],
)
def test_printable_names_are_kept_stripped(name, kept):
    assert identity_name(name) == kept


def test_quoted_cuts_long_text_and_shown_escapes_what_moves_the_cursor():
    assert quoted("x" * 1000).endswith("\u2026") and len(quoted("x" * 1000)) == QUOTED
    assert quoted("Ann") == "'Ann'"
    assert shown("Ann\nbob  2026\x1b[31m\u202e\x00") == "Ann\\x0abob  2026\\x1b[31m\\u202e\\x00"
    assert shown("Zoë محمد") == "Zoë محمد"


def test_lookup_keeps_old_names_reachable_but_refuses_what_no_row_holds():
    assert lookup_name(" Ann\u202e ") == "Ann\u202e"  # stored before the rule: still reachable
    for name in ("Ann\x00", "A" * 201, " "):
        with pytest.raises(EnrollmentError):
            lookup_name(name)


@pytest.fixture
def gallery(db_url):
    with Gallery.open(db_url) as g:
        yield g


def _identities(gallery: Gallery) -> int:
    with gallery.db.session() as session:
        return session.scalar(select(func.count()).select_from(Identity))


@pytest.mark.parametrize("name, reason", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_every_way_of_storing_a_name_refuses_it_and_writes_nothing(gallery, tmp_path, name, reason):
    vectors = media("x", unit(np.random.default_rng(0), 2, 16))
    with pytest.raises(EnrollmentError, match=re.escape(reason)):
        gallery.add_identity(name)
    with pytest.raises(EnrollmentError, match=re.escape(reason)):
        gallery.add_media(name, "projection-16", vectors, create=True)
    enroller = Enroller(gallery, blobs, ProjectionEmbedder())
    photo = face_image(tmp_path / "ann.png", (40, 60, 220))
    with pytest.raises(EnrollmentError, match=re.escape(reason)):
        enroller.enroll_images(name, [photo])
    assert _identities(gallery) == 0


def test_a_folder_with_one_bad_name_enrolls_nobody(gallery, tmp_path):
    root = tmp_path / "people"
    face_image(root / "Ann" / "a.png", (40, 60, 220))
    face_image(root / "bob\x1b[2J" / "b.png", (220, 80, 40))
    enroller = Enroller(gallery, blobs, ProjectionEmbedder())
    with pytest.raises(EnrollmentError, match=r"identity name of .*b\.png: .*U\+001B"):
        enroller.enroll_folder(root)
    assert _identities(gallery) == 0


def test_lookups_of_impossible_names_are_one_error_on_every_backend(gallery):
    for name in ("Ann\x00", "A" * 100_000):
        with pytest.raises(EnrollmentError) as info:
            gallery.remove_identity(name)
        assert len(str(info.value)) < 200
    with pytest.raises(IdentityNotFoundError, match="not in the gallery"):
        gallery.merge_identities("Ann", "Bob")
