"""bench/machine.py: the processor line every benchmark prints first."""

from __future__ import annotations

import pytest

from tests.bench.conftest import load_bench

CPUINFO = """processor\t: 0
vendor_id\t: {vendor}
model name\t: {model}
flags\t\t: {flags}

processor\t: 1
model name\t: {model}
flags\t\t: fpu
"""


@pytest.mark.parametrize(
    "model, flags, expected",
    [
        (
            "AMD EPYC",
            "fpu avx2 avx512f avx512_bf16 avx512_vnni",
            "AVX2 yes, AVX512 yes, AVX512-BF16 yes, VNNI yes, AMX no",
        ),
        (
            "Intel(R) Xeon(R) Platinum 8480+",
            "avx2 avx512f avx512_bf16 avx512_vnni amx_tile amx_bf16 amx_int8",
            "AVX2 yes, AVX512 yes, AVX512-BF16 yes, VNNI yes, AMX yes",
        ),
        ("Intel(R) Core(TM) i7-8700", "avx avx2 fma", "AVX2 yes, AVX512 no, AVX512-BF16 no, VNNI no, AMX no"),
        ("Sapphire without tiles", "avx2 amx_bf16", "AMX no"),  # AMX needs its tiles too
    ],
)
def test_processor_and_instruction_sets(model, flags, expected):
    machine = load_bench("machine")
    line = machine.describe(CPUINFO.format(vendor="x", model=model, flags=flags), cores=2)
    assert line.startswith(f"CPU {model}, 2 cores (") and expected in line
    assert "Python 3." in line and "torch " in line and "onnxruntime " in line


def test_no_cpuinfo_says_the_flags_are_unknown():
    line = load_bench("machine").describe("", cores=1)
    assert "1 cores (flags unknown)" in line


def test_this_machine():
    line = load_bench("machine").describe()
    assert line.startswith("CPU ") and " cores (" in line
