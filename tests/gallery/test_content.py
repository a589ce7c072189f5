"""gallery/content.py: a file's content key (size and sampled blocks, a few MB read however large the file) and
finding a file's source by content first, else by name."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from gallery.content import BLOCK_BYTES, MIDDLE_BLOCKS, ContentKeyError, content_key, find_source
from gallery.db import Database
from gallery.matchlog import MatchLogWriter
from gallery.models import Run, Source
from tests.conftest import ASSETS, require

SAMPLED = (MIDDLE_BLOCKS + 2) * BLOCK_BYTES  # bytes read at most


def _file(path: Path, size: int, seed: int = 0) -> Path:
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def _flip(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_a_copy_under_another_name_has_the_same_key(tmp_path):
    clip = require(ASSETS / "videos" / "person_tracker_cctv.mp4")
    copy = tmp_path / "elsewhere" / "renamed.mp4"
    copy.parent.mkdir()
    shutil.copyfile(clip, copy)
    key = content_key(clip)
    assert key == content_key(copy) == content_key(str(copy))
    assert len(key) == 64 and int(key, 16) >= 0  # SHA-256 hex


@pytest.mark.parametrize("size", [1, BLOCK_BYTES - 1, BLOCK_BYTES, SAMPLED, SAMPLED + 1, 3 * SAMPLED + 7])
@pytest.mark.parametrize("where", ["first", "last", "a sampled middle block"])
def test_a_changed_byte_in_a_sampled_block_changes_the_key(tmp_path, size, where):
    path = _file(tmp_path / "v.bin", size)
    before = content_key(path)
    span = max(0, size - BLOCK_BYTES)
    offset = {"first": 0, "last": size - 1, "a sampled middle block": span // (MIDDLE_BLOCKS + 1) + 3}[where]
    _flip(path, min(offset, size - 1))
    assert content_key(path) != before


def test_every_byte_of_a_small_file_counts(tmp_path):
    path = _file(tmp_path / "v.bin", SAMPLED)  # small enough to be read whole
    before = content_key(path)
    _flip(path, SAMPLED // 2 + 12345)
    assert content_key(path) != before


@pytest.mark.parametrize("sizes", [(0, 1), (1000, 1001), (SAMPLED, SAMPLED + 1)])
def test_the_size_is_part_of_the_key(tmp_path, sizes):
    a = tmp_path / "a.bin"
    a.write_bytes(b"\0" * sizes[0])
    b = tmp_path / "b.bin"
    b.write_bytes(b"\0" * sizes[1])
    assert content_key(a) != content_key(b)


def test_a_multi_gigabyte_file_is_keyed_from_a_few_megabytes(tmp_path):
    io = Path("/proc/self/io")
    if not io.exists():
        pytest.skip("no /proc/self/io to count the bytes read")
    path = tmp_path / "big.mp4"
    with path.open("wb") as f:  # 6 GiB, sparse: the key must not read it
        f.truncate(6 << 30)

    def read() -> int:  # bytes this process has read so far
        return int(dict(line.split(": ") for line in io.read_text().splitlines())["rchar"])

    start = read()
    key = content_key(path)
    assert read() - start <= SAMPLED + 64 * 1024  # the sampled blocks, nothing more
    _flip(path, (6 << 30) - 1)  # the last byte is sampled
    assert content_key(path) != key


@pytest.mark.parametrize("what", ["missing", "folder"])
def test_an_unreadable_file_is_one_error_naming_it(tmp_path, what):
    path = tmp_path / "gone.mp4"
    if what == "folder":
        path.mkdir()
    with pytest.raises(ContentKeyError, match="gone.mp4: expected a readable file"):
        content_key(path)


def test_find_source_by_content_then_by_name(db_url):
    with Database(db_url) as db:
        with MatchLogWriter(db, source="a.mp4", uri="/v/a.mp4", content_key="k" * 64, config_hash="h") as w:
            keyed = w.source_id
        with MatchLogWriter(db, source="old.mp4", uri="/v/old.mp4", config_hash="h") as w:  # before keys
            legacy = w.source_id
        with MatchLogWriter(db, source="gate", kind="camera", uri="rtsp://cam/1", config_hash="h") as w:
            camera = w.source_id
        with db.session() as session:

            def found(name, key, uri=None):
                src = find_source(session, name, key, uri)
                return None if src is None else src.id

            assert found("copy.mp4", "k" * 64) == keyed  # the same content under another name
            assert found("a.mp4", "z" * 64) is None  # another file now lies at that path
            assert found("old.mp4", "z" * 64, "/v/old.mp4") == legacy  # known by name and path until keyed
            assert found("old.mp4", "z" * 64, "/elsewhere/old.mp4") is None  # the same name in another folder
            assert found("gate", None) == camera  # cameras by name
            assert found("new.mp4", "n" * 64) is None


def test_a_file_logged_before_keys_is_keyed_and_another_file_at_a_known_path_is_a_new_source(db_url):
    with Database(db_url) as db:
        with MatchLogWriter(db, source="old.mp4", uri="/v/old.mp4", config_hash="h") as w:
            legacy = w.source_id
        with MatchLogWriter(
            db, source="old.mp4", uri="/v/old.mp4", content_key="1" * 64, config_hash="h"
        ) as w:
            assert w.source_id == legacy  # adopted: known by content from now on
        with MatchLogWriter(
            db, source="moved.mp4", uri="/w/moved.mp4", content_key="1" * 64, config_hash="h"
        ) as w:
            assert w.source_id == legacy
        with MatchLogWriter(
            db, source="old.mp4", uri="/v/old.mp4", content_key="2" * 64, config_hash="h"
        ) as w:
            other = w.source_id  # the file at that path changed: another source
        with db.session() as session:
            sources = {s.id: (s.name, s.content_key) for s in session.scalars(select(Source))}
            paths = list(session.scalars(select(Run.path).order_by(Run.id)))
    assert sources == {legacy: ("old.mp4", "1" * 64), other: ("old.mp4 (222222222222)", "2" * 64)}
    assert paths == ["/v/old.mp4", "/v/old.mp4", "/w/moved.mp4", "/v/old.mp4"]  # each run's own path
