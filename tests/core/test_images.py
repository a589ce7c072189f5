"""core/images.py: the one pixel cap on every photo read, checked from the header before decoding."""

from __future__ import annotations

import sqlite3
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from contextlib import closing

import cv2
import numpy as np
import pytest

from core.errors import InputError
from core.images import MAX_PIXELS, decode_image, image_size, read_image
from tests.conftest import ROOT


def bomb_png(width: int, height: int) -> bytes:
    """A valid grey PNG of ``width`` x ``height`` zero pixels: a few hundred KB that decode into width*height
    bytes (the header claims the size; the zero rows compress ~1000:1)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    body = b"".join(raw.compress(row) for _ in range(height)) + raw.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return bomb_png(30000, 30000)


def test_a_pixel_bomb_is_refused_from_its_header(bomb):
    assert len(bomb) < 2_000_000 and image_size(bomb) == (0, 0)  # beyond what Pillow even opens
    start = time.monotonic()
    with pytest.raises(
        InputError, match=r"bomb.png: expected at most 67,108,864 pixels, got an image header"
    ):
        decode_image(bomb, "bomb.png")
    assert time.monotonic() - start < 2.0


@pytest.mark.parametrize("side, refused", [(8192, False), (8193, True)])
def test_the_cap_is_width_times_height(side, refused):
    data = bomb_png(side, 8192)
    assert image_size(data) == (side, 8192)
    if refused:
        with pytest.raises(InputError, match=f"expected at most {MAX_PIXELS:,} pixels, got {side}x8192"):
            decode_image(data, "big.png")
    else:
        assert decode_image(data, "big.png").shape == (8192, side, 3)


@pytest.mark.parametrize(
    "data", [b"", b"not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40], ids=["empty", "text", "cut"]
)
def test_bytes_that_are_no_image_are_one_error(data):
    with pytest.raises(InputError, match="expected a decodable image file"):
        decode_image(data, "x.png")


def test_read_image_reads_decodes_and_says_which_file(tmp_path):
    photo = tmp_path / "a.png"
    cv2.imwrite(str(photo), np.full((20, 30, 3), 7, np.uint8))
    data, image = read_image(photo)
    assert data == photo.read_bytes() and image.shape == (20, 30, 3)
    with pytest.raises(InputError, match="none.png: expected a readable image file"):
        read_image(tmp_path / "none.png")


@pytest.mark.slow
def test_enroll_of_a_pixel_bomb_is_one_line_quickly_with_bounded_memory(tmp_path, bomb):
    """The command line in a child whose address space is capped at 3 GiB (the bomb alone would decode into
    2.7 GB, on top of the models): one line, exit 2, no identity enrolled."""
    (tmp_path / "bomb.png").write_bytes(bomb)
    limit = 3 * 2**30
    code = textwrap.dedent(
        f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
        sys.argv = ["run_pipeline.py", "enroll", "--name", "Ann", {str(tmp_path / "bomb.png")!r},
                    "--db", "sqlite:///{tmp_path / "g.db"}", "--config", {str(ROOT / "configs" / "test.yaml")!r}]
        sys.path.insert(0, {str(ROOT)!r})
        import run_pipeline
        sys.exit(run_pipeline.main(sys.argv[1:]))
        """
    )
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "bomb.png: expected at most 67,108,864 pixels" in lines[0]
    assert time.monotonic() - start < 60
    if (tmp_path / "g.db").exists():
        with closing(sqlite3.connect(tmp_path / "g.db")) as conn:
            assert conn.execute("SELECT count(*) FROM identities").fetchone()[0] == 0
