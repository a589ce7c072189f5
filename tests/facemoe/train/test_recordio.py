"""RecordIO reading and writing without MXNet, checked against the byte layout."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from facemoe.train.recordio import MAGIC, RecordIOError, RecordReader, write_image_records


def test_round_trip_and_insightface_layout(tmp_path):
    path = tmp_path / "s.rec"
    assert write_image_records(path, [(3, b"abc"), (7, b"0123456789")]) == 2
    raw = path.read_bytes()
    # record 0: magic, length 24 + 8 (flag 2 -> two float labels), header (flag=2), labels [3, 3]
    magic, lrec = struct.unpack_from("<II", raw, 0)
    assert magic == MAGIC and lrec == 32
    assert struct.unpack_from("<I", raw, 8)[0] == 2
    assert struct.unpack_from("<2f", raw, 8 + 24) == (3.0, 3.0)
    reader = RecordReader(path)
    assert reader.image_keys() == [1, 2]
    label, data = reader.read_image(2)
    assert label.tolist() == [7.0] and data == b"0123456789"
    assert reader.read_label(2).tolist() == [7.0] and reader.read_label(0).tolist() == [3.0, 3.0]
    lines = (tmp_path / "s.idx").read_text().split("\n")
    assert lines[0] == "0\t0" and lines[1] == "1\t40"  # 8 + 32 bytes, already 4-aligned


def test_payload_containing_the_magic_word_is_split_and_joined(tmp_path):
    tricky = b"abcd" + struct.pack("<I", MAGIC) + b"efgh" + struct.pack("<I", MAGIC)
    path = tmp_path / "m.rec"
    write_image_records(path, [(1, tricky)])
    raw = path.read_bytes()
    assert raw.count(struct.pack("<I", MAGIC)) == 1 + 3  # record 0, then three parts of record 1
    assert RecordReader(path).read_image(1)[1] == tricky


def test_missing_index(tmp_path):
    (tmp_path / "x.rec").write_bytes(b"")
    with pytest.raises(RecordIOError, match="a .rec needs its .idx beside it"):
        RecordReader(tmp_path / "x.rec")


def test_truncated_record(tmp_path):
    path = tmp_path / "t.rec"
    write_image_records(path, [(1, bytes(100))])
    path.write_bytes(path.read_bytes()[:-60])
    with pytest.raises(RecordIOError, match="record 1 expected"):
        RecordReader(path).read_image(1)


def test_bad_index_line(tmp_path):
    path = tmp_path / "b.rec"
    write_image_records(path, [(1, b"x")])
    (tmp_path / "b.idx").write_text("0\t0\nbroken\n")
    with pytest.raises(RecordIOError, match="line 2: expected 'key<TAB>offset'"):
        RecordReader(path)


def test_reader_survives_pickling(tmp_path):
    import pickle

    path = tmp_path / "p.rec"
    write_image_records(path, [(5, b"img")])
    reader = RecordReader(path)
    reader.read(1)
    clone = pickle.loads(pickle.dumps(reader))
    assert np.array_equal(clone.read_image(1)[0], [5.0])
