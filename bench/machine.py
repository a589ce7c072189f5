"""What a benchmark ran on, printed first by every benchmark: the processor (model, cores, the instruction sets
that decide FaceMoE's and the detector's speed) and the versions of the libraries that do the work. Machines of one
kind differ (with or without AMX, FaceMoE ran at half the speed), so a figure is only a claim with this line."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

__all__ = ["FEATURES", "LIBRARIES", "describe", "features"]

# the name shown -> the /proc/cpuinfo flags that make it (all needed)
FEATURES = {
    "AVX2": ("avx2",),
    "AVX512": ("avx512f",),
    "AVX512-BF16": ("avx512_bf16",),
    "VNNI": ("avx512_vnni",),
    "AMX": ("amx_tile", "amx_bf16"),
}
LIBRARIES = ("torch", "onnxruntime", "numpy", "opencv-python", "opencv-python-headless", "faiss-cpu", "av")


def _cpuinfo(text: str) -> tuple[str, set[str]]:
    """(model name, flags) of the first processor in a /proc/cpuinfo text."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def features(flags: set[str]) -> dict[str, bool]:
    """Which of :data:`FEATURES` the flags have."""
    return {name: all(f in flags for f in needed) for name, needed in FEATURES.items()}


def describe(cpuinfo: str | None = None, cores: int | None = None) -> str:
    """One line: ``CPU <model>, <cores> cores (AVX2 yes, ..., AMX no); Python x, torch y, ...`` (libraries not
    installed are left out). ``cpuinfo``: the text of /proc/cpuinfo (read here when None; where there is none, the
    platform's name of the processor and no instruction sets)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.is_file() else ""
    model, flags = _cpuinfo(cpuinfo)
    model = model or platform.processor() or platform.machine() or "unknown processor"
    cores = (
        cores
        if cores is not None
        else len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count()
    )
    isa = (
        ", ".join(f"{name} {'yes' if has else 'no'}" for name, has in features(flags).items())
        if flags
        else "flags unknown"
    )
    versions = [f"Python {platform.python_version()}"]
    for lib in LIBRARIES:
        try:
            versions.append(f"{lib} {metadata.version(lib)}")
        except metadata.PackageNotFoundError:
            continue
    return f"CPU {model}, {cores} cores ({isa}); {', '.join(versions)}"
