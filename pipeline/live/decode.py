"""Which decoder a camera uses: hardware (VAAPI, NVDEC through FFmpeg's ``cuda`` device) or the CPU.

``decode`` (per camera, else the ``live`` section's) is ``auto``, ``cpu``, ``vaapi`` or ``cuda``. A hardware kind is
available when the FFmpeg linked by PyAV was built with that device type (``av.codec.hwaccel.hwdevices_available``)
and a device of it opens here (an H.264 decoder created on it without software fallback). ``auto`` takes the first
available of ``cuda``, ``vaapi``, else the CPU; an explicit hardware kind that is not available is refused
(:class:`core.errors.ConfigError`: one line, exit code 2 from the CLI). Probes are done once per process.
"""

from __future__ import annotations

import functools
import glob
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import av
from av.codec.hwaccel import HWAccel, hwdevices_available

from core.errors import ConfigError

__all__ = ["AUTO_ORDER", "DecodeChoice", "check_decoders", "choose_decoder", "hw_unavailable"]

logger = logging.getLogger(__name__)

AUTO_ORDER = ("cuda", "vaapi")  # what ``auto`` tries, in this order, before the CPU


@dataclass(frozen=True)
class DecodeChoice:
    """The decoder of one camera: ``kind`` ``cpu``, ``cuda`` or ``vaapi``; ``why``: how it was chosen (for the log);
    ``hwaccel``: what :func:`av.open` gets (None: CPU decode)."""

    kind: str
    why: str
    hwaccel: HWAccel | None = None


@functools.cache
def hw_unavailable(kind: str) -> str | None:
    """Why hardware decode of ``kind`` (``cuda``, ``vaapi``) cannot run here, or None when it can."""
    if kind not in hwdevices_available():
        return f"PyAV's FFmpeg has no {kind} support (it has: {', '.join(hwdevices_available()) or 'none'})"
    if kind == "vaapi" and not glob.glob("/dev/dri/renderD*"):
        return "no VAAPI render device (/dev/dri/renderD*)"
    try:
        ctx = av.CodecContext.create("h264", "r", hwaccel=HWAccel(kind, allow_software_fallback=False))
    except (av.FFmpegError, OSError, ValueError) as exc:
        return f"no {kind} device opens ({exc})"
    if not getattr(ctx, "is_hwaccel", True):
        return f"the H.264 decoder does not run on {kind}"
    return None


def choose_decoder(wanted: str) -> DecodeChoice:
    """The decoder for a camera configured with ``decode: wanted``; an unavailable explicit hardware kind raises
    :class:`ConfigError`."""
    if wanted == "cpu":
        return DecodeChoice("cpu", "decode: cpu")
    if wanted == "auto":
        reasons = []
        for kind in AUTO_ORDER:
            reason = hw_unavailable(kind)
            if reason is None:
                return DecodeChoice(kind, f"auto: {kind} available", HWAccel(kind))
            reasons.append(f"{kind}: {reason}")
        return DecodeChoice("cpu", "auto: no hardware decoder (" + "; ".join(reasons) + ")")
    reason = hw_unavailable(wanted)
    if reason is not None:
        raise ConfigError(f"decode: {wanted} asked for, but {reason}; use decode: auto or cpu")
    # software fallback stays on: a stream the device cannot decode (profile, size) is still decoded
    return DecodeChoice(wanted, f"decode: {wanted}", HWAccel(wanted))


def check_decoders(wanted: Iterable[str]) -> None:
    """Refuse (:class:`ConfigError`) before anything starts when any camera asks for hardware decode that is not
    available here."""
    for kind in sorted(set(wanted)):
        choose_decoder(kind)
