"""insightface / MXNet ``.rec`` + ``.idx`` image datasets, read and written without MXNet.

Layout (dmlc RecordIO): each record is ``uint32 magic 0xced7230a``, ``uint32 (cflag << 29 | length)``,
``length`` bytes, zero padding to 4 bytes. A payload that contains the magic word at a 4-byte boundary is
split there into parts (cflag 1 = first, 2 = middle, 3 = last) and joined back with the magic on reading.
A payload is an image record: header ``<IfQQ`` (flag, label, id, id2); when ``flag > 0`` the label is
``flag`` float32 values after the header; then the encoded image. The ``.idx`` file has lines
``key<TAB>byte offset``. In insightface sets, record 0 has ``flag > 0`` and ``label[0]`` = one past the
last image key (images are keys 1 .. label[0]-1).
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import FaceMoEError

__all__ = ["RecordIOError", "RecordReader", "write_image_records"]

logger = logging.getLogger(__name__)

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_HEADER = struct.Struct("<IfQQ")
_LENGTH_MASK = (1 << 29) - 1


class RecordIOError(FaceMoEError):
    """A .rec/.idx pair that is missing, truncated or not in the expected layout."""


class RecordReader:
    """Random access to image records by key. Opens its file lazily, once per process (fork-safe)."""

    def __init__(self, rec_path: str | os.PathLike):
        self.rec_path = Path(rec_path)
        self.idx_path = self.rec_path.with_suffix(".idx")
        for p in (self.rec_path, self.idx_path):
            if not p.is_file():
                raise RecordIOError(f"record file not found: {p} (a .rec needs its .idx beside it)")
        self.offsets: dict[int, int] = {}
        with self.idx_path.open() as fh:
            for n, line in enumerate(fh, start=1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit():
                    raise RecordIOError(
                        f"{self.idx_path} line {n}: expected 'key<TAB>offset', got {line.strip()!r}"
                    )
                self.offsets[int(parts[0])] = int(parts[1])
        if not self.offsets:
            raise RecordIOError(f"{self.idx_path}: expected at least one record, got an empty index")
        self._size = self.rec_path.stat().st_size
        self._fh = None
        self._pid = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fh"] = state["_pid"] = None
        return state

    def _file(self):
        if self._fh is None or self._pid != os.getpid():
            self._fh = self.rec_path.open("rb")
            self._pid = os.getpid()
        return self._fh

    def read(self, key: int) -> bytes:
        """The payload of record ``key`` (parts joined)."""
        if key not in self.offsets:
            raise RecordIOError(f"{self.idx_path}: no record with key {key}")
        fh = self._file()
        fh.seek(self.offsets[key])
        parts = []
        while True:
            head = fh.read(8)
            if len(head) < 8:
                raise RecordIOError(f"{self.rec_path}: truncated record {key} at offset {self.offsets[key]}")
            magic, lrec = struct.unpack("<II", head)
            if magic != MAGIC:
                raise RecordIOError(
                    f"{self.rec_path}: expected record magic {MAGIC:#x} at key {key}, got {magic:#x}"
                )
            cflag, length = lrec >> 29, lrec & _LENGTH_MASK
            data = fh.read(length)
            if len(data) < length:
                raise RecordIOError(f"{self.rec_path}: record {key} expected {length} bytes, got {len(data)}")
            fh.seek((4 - length % 4) % 4, os.SEEK_CUR)
            parts.append(data)
            if cflag in (0, 3):
                return _MAGIC_BYTES.join(parts)

    def read_label(self, key: int) -> np.ndarray:
        """The label array of record ``key``, reading only its header (cheap on multi-GB files)."""
        fh = self._file()
        fh.seek(self.offsets[key])
        head = fh.read(8 + _HEADER.size)
        if len(head) < 8 + _HEADER.size or struct.unpack_from("<I", head)[0] != MAGIC:
            raise RecordIOError(
                f"{self.rec_path}: expected a record header at key {key}, got truncated or bad data"
            )
        flag, label, _, _ = _HEADER.unpack_from(head, 8)
        if flag == 0:
            return np.asarray([label], np.float32)
        labels = np.frombuffer(fh.read(4 * flag), np.float32)
        if labels.size != flag:
            raise RecordIOError(f"{self.rec_path}: record {key} expected {flag} labels, got {labels.size}")
        return labels

    def read_image(self, key: int) -> tuple[np.ndarray, bytes]:
        """(label float32 array, encoded image bytes) of record ``key``."""
        payload = self.read(key)
        if len(payload) < _HEADER.size:
            raise RecordIOError(
                f"{self.rec_path}: record {key} is {len(payload)} bytes, shorter than its header"
            )
        flag, label, _, _ = _HEADER.unpack_from(payload)
        start = _HEADER.size
        if flag > 0:
            labels = np.frombuffer(payload, np.float32, count=flag, offset=start)
            start += 4 * flag
        else:
            labels = np.asarray([label], np.float32)
        return labels, payload[start:]

    def image_keys(self) -> list[int]:
        """Keys of the image records (insightface layout: record 0 says where images end)."""
        if 0 in self.offsets:
            payload = self.read(0)
            if len(payload) >= _HEADER.size + 4 and _HEADER.unpack_from(payload)[0] > 0:
                end = int(np.frombuffer(payload, np.float32, count=1, offset=_HEADER.size)[0])
                return [k for k in range(1, end) if k in self.offsets]
        return sorted(self.offsets)


def _pack(label: float, image: bytes, key: int) -> bytes:
    return _HEADER.pack(0, float(label), key, 0) + image


def _write_record(fh, payload: bytes) -> None:
    # split at aligned magic words, as the dmlc writer does
    cuts = [i for i in range(0, len(payload) - 3, 4) if payload[i : i + 4] == _MAGIC_BYTES]
    bounds = [0] + [c for cut in cuts for c in (cut, cut + 4)] + [len(payload)]
    pieces = [payload[bounds[i] : bounds[i + 1]] for i in range(0, len(bounds), 2)]
    for n, piece in enumerate(pieces):
        cflag = 0 if len(pieces) == 1 else 1 if n == 0 else 3 if n == len(pieces) - 1 else 2
        fh.write(struct.pack("<II", MAGIC, (cflag << 29) | len(piece)))
        fh.write(piece + b"\0" * ((4 - len(piece) % 4) % 4))


def write_image_records(rec_path: str | os.PathLike, samples: Iterable[tuple[int, bytes]]) -> int:
    """Write (label, encoded image) samples as an insightface-layout ``.rec``/``.idx`` pair; returns the count.

    Files appear only when complete (written under a temporary name, then renamed).
    """
    rec_path = Path(rec_path)
    idx_path = rec_path.with_suffix(".idx")
    tmp_rec, tmp_idx = (
        rec_path.with_name(rec_path.name + ".partial"),
        idx_path.with_name(idx_path.name + ".partial"),
    )
    items = list(samples)
    with tmp_rec.open("wb") as rec, tmp_idx.open("w") as idx:
        header = (
            struct.pack("<IfQQ", 2, 0.0, 0, 0)
            + np.asarray([len(items) + 1, len(items) + 1], np.float32).tobytes()
        )
        offsets = []
        for payload in [header] + [_pack(lab, img, k + 1) for k, (lab, img) in enumerate(items)]:
            offsets.append(rec.tell())
            _write_record(rec, payload)
        idx.writelines(f"{key}\t{off}\n" for key, off in enumerate(offsets))
    os.replace(tmp_rec, rec_path)
    os.replace(tmp_idx, idx_path)
    return len(items)
