"""hwtune.hostcpu: the running CPU from /proc/cpuinfo texts, sysctl (macOS) or the platform fallback."""

from __future__ import annotations

import pytest

from hwtune import hostcpu
from hwtune.hostcpu import detect_cpu, isa_families, isa_summary

# First processor blocks of real machines (flags trimmed to a plausible subset; order as the kernel prints).
EPYC_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni
processor\t: 1
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse avx512f avx512_vnni
"""
EPYC_VNNI = """processor\t: 0
model name\t: AMD EPYC
flags\t\t: fpu sse4_2 avx fma f16c avx2 avx512f avx512dq avx512_bf16 avx512_vnni avx512_bitalg
"""
PI5 = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd0b
"""


def test_x86_model_and_flags_come_from_the_first_processor():
    cpu = detect_cpu(EPYC_AVX2, machine="x86_64", system="Linux")
    assert cpu.model == "AMD EPYC 7B12"
    assert cpu.isa == ("sse4_2", "avx", "avx2", "fma", "f16c")  # the second block's AVX-512 is not read
    assert cpu.families == {"avx2": True, "avx512": False, "vnni": False, "neon": False, "dotprod": False}
    assert cpu.describe() == "AMD EPYC 7B12 with AVX2"


def test_avx512_vnni_is_seen():
    cpu = detect_cpu(EPYC_VNNI, machine="x86_64", system="Linux")
    assert cpu.families["avx512"] and cpu.families["vnni"]
    assert "avx512_bf16" not in cpu.isa  # only the flags that pick kernels are kept


def test_arm_board_without_model_line_is_named_by_its_part():
    cpu = detect_cpu(PI5, machine="aarch64", system="Linux")
    assert cpu.model == "ARM implementer 0x41 part 0xd0b"
    assert {"asimd", "asimdhp", "asimddp"} <= set(cpu.isa)
    assert cpu.families["neon"] and cpu.families["dotprod"] and not cpu.families["vnni"]


def test_same_as_compares_model_and_kernel_flags_only():
    avx2 = detect_cpu(EPYC_AVX2, machine="x86_64", system="Linux")
    assert avx2.same_as("AMD EPYC 7B12", ["avx2", "sse4_2", "avx", "fma", "f16c", "sha_ni"])  # sha_ni ignored
    assert not avx2.same_as("AMD EPYC 7B12", ["avx2", "sse4_2", "avx", "fma", "f16c", "avx512_vnni"])
    assert not avx2.same_as("AMD EPYC 7B13", list(avx2.isa))


def test_macos_uses_sysctl(monkeypatch):
    answers = {"machdep.cpu.brand_string": "Intel(R) Core(TM) i9-9880H", "machdep.cpu.features": "FPU SSE4.2 AVX1.0",
               "machdep.cpu.leaf7_features": "AVX2 BMI2"}
    monkeypatch.setattr(hostcpu, "_sysctl", lambda name: answers.get(name, ""))
    cpu = detect_cpu("", machine="x86_64", system="Darwin")
    assert cpu.model == "Intel(R) Core(TM) i9-9880H" and cpu.source == "sysctl"
    assert "avx2" in cpu.isa and "sse4_2" in cpu.isa


def test_apple_silicon_and_unknown_systems_fall_back_to_platform(monkeypatch):
    monkeypatch.setattr(hostcpu, "_sysctl", lambda name: "Apple M2" if name == "machdep.cpu.brand_string" else "")
    m2 = detect_cpu("", machine="arm64", system="Darwin")
    assert m2.model == "Apple M2" and m2.families["neon"]  # AdvSIMD is part of ARMv8-A
    other = detect_cpu(None, machine="riscv64", system="FreeBSD")
    assert other.source == "platform" and other.isa == () and other.model
    assert isa_summary(other.isa) == "no AVX2/AVX-512/VNNI/NEON"


def test_detect_reads_the_cpuinfo_file_and_caches(monkeypatch, tmp_path):
    fake = tmp_path / "cpuinfo"
    fake.write_text(EPYC_AVX2)
    monkeypatch.setattr(hostcpu, "CPUINFO", fake)
    monkeypatch.setattr(hostcpu.platform, "system", lambda: "Linux")
    detect_cpu.cache_clear()
    try:
        assert detect_cpu().model == "AMD EPYC 7B12"
        fake.write_text(EPYC_VNNI)
        assert detect_cpu().model == "AMD EPYC 7B12"  # cached for the process
        assert hostcpu.read_cpuinfo()["model name"] == "AMD EPYC"
    finally:
        detect_cpu.cache_clear()


@pytest.mark.parametrize("flags, families", [
    (["avx_vnni", "avx2"], {"avx2": True, "vnni": True, "avx512": False}),
    (["neon"], {"neon": True, "vnni": False}),
])
def test_isa_families(flags, families):
    got = isa_families(flags)
    assert {k: got[k] for k in families} == families
