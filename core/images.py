"""Reading image files: every photo the system is given (enroll, search, eval, the Python API, the HTTP API)
is decoded here, under one pixel cap checked from the file's header before any pixel is decoded, so that a small
file that claims a huge canvas (a "decompression bomb": an 875 KB PNG of 30000x30000) is refused at once instead
of decoding into gigabytes.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .errors import InputError, UserError

__all__ = ["MAX_PIXELS", "decode_image", "image_size", "read_image"]

MAX_PIXELS = 64 * 2**20  # largest image decoded (width x height: 8192x8192), about 200 MB as BGR


def image_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` as the header of encoded ``data`` states them (nothing decoded), ``(0, 0)`` when the
    header claims more pixels than Pillow even opens, None when it is no image Pillow knows."""
    try:
        with Image.open(io.BytesIO(data)) as header:
            return header.size
    except Image.DecompressionBombError:
        return 0, 0
    except (OSError, ValueError, SyntaxError, EOFError):
        return None


def decode_image(data: bytes, name: str, error: type[UserError] = InputError) -> np.ndarray:
    """Encoded ``data`` as a BGR uint8 ``[H, W, 3]`` image; ``name`` (a file name) says which in messages.

    Bytes that are no image, or an image of more than :data:`MAX_PIXELS` pixels by its header, raise ``error``
    (a :class:`core.errors.UserError`, :class:`InputError` by default) before any pixel is decoded."""
    size = image_size(data) if data else None
    if size == (0, 0):
        raise error(f"{name}: expected at most {MAX_PIXELS:,} pixels, got an image header claiming far more")
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise error(f"{name}: expected at most {MAX_PIXELS:,} pixels, got {size[0]}x{size[1]}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if size is not None else None
    if image is None:
        raise error(f"{name}: expected a decodable image file, got {len(data):,} bytes that do not decode")
    return image


def read_image(path: str | Path, error: type[UserError] = InputError) -> tuple[bytes, np.ndarray]:
    """The bytes of the image file ``path`` and the image they decode to (:func:`decode_image`); a missing or
    unreadable file raises ``error`` too."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise error(f"{path}: expected a readable image file, got {exc.strerror or exc}") from None
    return data, decode_image(data, str(path), error)
