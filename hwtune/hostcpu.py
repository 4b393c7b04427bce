"""The CPU this process runs on: model name and the ISA flags that decide kernel speed.

Linux reads ``/proc/cpuinfo`` (x86 ``model name``/``flags``, ARM ``Features`` and ``Hardware``/
``CPU part``); macOS asks ``sysctl``; anything else falls back to :mod:`platform`. Only the flags
hwtune's choices depend on are kept (``ISA_FLAGS``), so two machines compare equal when they would
run the same kernels. No torch, no onnxruntime: profiles, benchmarks and the device script's
callers all use it.

Example:
    >>> from hwtune.hostcpu import detect_cpu
    >>> cpu = detect_cpu()
    >>> isinstance(cpu.model, str) and isinstance(cpu.isa, tuple)
    True
"""

from __future__ import annotations

import functools
import platform
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ISA_FLAGS", "HostCPU", "detect_cpu", "isa_families", "isa_summary", "parse_cpuinfo", "read_cpuinfo"]

# Flags whose presence changes which kernels ONNX Runtime / XNNPACK run (or hwtune's peak estimate).
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512vnni", "avx_vnni",
             "avx512_fp16", "amx_int8", "neon", "asimd", "asimdhp", "asimddp", "sve")

CPUINFO = Path("/proc/cpuinfo")
_ARM_MACHINES = ("arm64", "aarch64", "armv8l", "armv7l")


@dataclass(frozen=True)
class HostCPU:
    """A CPU as hwtune sees it: model name, the ISA flags of ``ISA_FLAGS`` it has, and where they came from."""

    model: str
    isa: tuple[str, ...]
    machine: str = ""
    source: str = ""

    @property
    def families(self) -> dict[str, bool]:
        """``{"avx2", "avx512", "vnni", "neon", "dotprod"}`` -> present (what a reader of a benchmark asks first)."""
        return isa_families(self.isa)

    def describe(self) -> str:
        """``AMD EPYC with AVX2, AVX-512, VNNI``: the model and the ISA families it has."""
        return f"{self.model or 'unknown CPU'} with {isa_summary(self.isa)}"

    def same_as(self, model: str, isa: Iterable[str]) -> bool:
        """Whether a CPU recorded as ``model`` with flags ``isa`` runs the same kernels as this one.

        Compares the model name and the flags of ``ISA_FLAGS`` (recorded flags outside that list are
        ignored, so a record with every ``/proc/cpuinfo`` flag still compares).
        """
        wanted = {f for f in isa if f in ISA_FLAGS}
        return model.strip() == self.model.strip() and wanted == set(self.isa)

    def to_dict(self) -> dict[str, object]:
        return {"model": self.model, "isa": list(self.isa), "machine": self.machine, "source": self.source,
                "families": self.families}


def isa_families(isa: Iterable[str]) -> dict[str, bool]:
    """Group raw flags into the families results are read by: AVX2, AVX-512, VNNI (x86, any form), NEON, dotprod."""
    flags = set(isa)
    return {
        "avx2": "avx2" in flags,
        "avx512": "avx512f" in flags,
        "vnni": bool(flags & {"avx512_vnni", "avx512vnni", "avx_vnni"}),
        "neon": bool(flags & {"neon", "asimd"}),
        "dotprod": "asimddp" in flags,  # ARM's int8 dot product (the VNNI of NEON)
    }


def parse_cpuinfo(text: str) -> dict[str, str]:
    """The first value of every key in a ``/proc/cpuinfo`` text (the first processor's block)."""
    info: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and key.strip() not in info:
            info[key.strip()] = value.strip()
    return info


def read_cpuinfo() -> dict[str, str]:
    """``parse_cpuinfo`` of this machine's ``/proc/cpuinfo`` ({} where there is none)."""
    try:
        return parse_cpuinfo(CPUINFO.read_text())
    except OSError:
        return {}


def _keep(flags: Iterable[str]) -> tuple[str, ...]:
    have = set(flags)
    return tuple(f for f in ISA_FLAGS if f in have)


def _from_cpuinfo(info: Mapping[str, str], machine: str) -> HostCPU:
    flags = (info.get("flags") or info.get("Features") or "").split()
    model = info.get("model name") or info.get("Hardware") or info.get("Model") or ""
    if not model and info.get("CPU implementer"):  # ARM boards without a model line: implementer/part ids
        model = f"ARM implementer {info['CPU implementer']} part {info.get('CPU part', '?')}"
    return HostCPU(model=model or platform.processor() or machine, isa=_keep(flags), machine=machine,
                   source=str(CPUINFO))


def _sysctl(name: str) -> str:
    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _from_platform(machine: str, system: str) -> HostCPU:
    model, flags, source = "", [], "platform"
    if system == "Darwin":
        model = _sysctl("machdep.cpu.brand_string")
        flags = (_sysctl("machdep.cpu.features") + " " + _sysctl("machdep.cpu.leaf7_features")).lower().split()
        flags = [f.replace(".", "_") for f in flags]
        source = "sysctl"
    if machine.lower() in _ARM_MACHINES and machine.lower() != "armv7l":
        flags += ["neon", "asimd"]  # AdvSIMD is mandatory on ARMv8-A
    return HostCPU(model=model or platform.processor() or machine, isa=_keep(flags), machine=machine, source=source)


def detect_cpu(cpuinfo: str | None = None, *, machine: str | None = None, system: str | None = None) -> HostCPU:
    """The CPU of this machine (cached when called without arguments).

    Args:
        cpuinfo: A ``/proc/cpuinfo`` text to read instead of the file (tests, other machines' dumps).
        machine: ``platform.machine()`` override.
        system: ``platform.system()`` override.
    """
    if cpuinfo is None and machine is None and system is None:
        return _detect_cached()
    return _detect(cpuinfo, machine or platform.machine(), system or platform.system())


@functools.lru_cache(maxsize=1)
def _detect_cached() -> HostCPU:
    return _detect(None, platform.machine(), platform.system())


# ``detect_cpu.cache_clear()`` forgets the cached CPU (tests that swap ``CPUINFO``), like functools' caches.
detect_cpu.cache_clear = _detect_cached.cache_clear  # type: ignore[attr-defined]


def _detect(cpuinfo: str | None, machine: str, system: str) -> HostCPU:
    if cpuinfo is None and system == "Linux":
        try:
            cpuinfo = CPUINFO.read_text()
        except OSError:
            cpuinfo = None
    if cpuinfo:
        info = parse_cpuinfo(cpuinfo)
        if info.get("flags") or info.get("Features") or info.get("model name"):
            return _from_cpuinfo(info, machine)
    return _from_platform(machine, system)


def isa_summary(isa: Iterable[str]) -> str:
    """``AVX2, AVX-512, VNNI`` for a flag list (none of them: ``no AVX2/AVX-512/VNNI/NEON``)."""
    names = {"avx2": "AVX2", "avx512": "AVX-512", "vnni": "VNNI", "neon": "NEON", "dotprod": "dotprod"}
    have = [names[k] for k, v in isa_families(isa).items() if v]
    return ", ".join(have) or "no AVX2/AVX-512/VNNI/NEON"
