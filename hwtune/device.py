"""Device profiles: what the target hardware is and how latency on it is obtained.

A profile is a TOML file (``profiles/<id>.toml``); a new device is a new file, not new code.
``load_profile`` validates every key at once and raises one ``ConfigError`` listing each
problem as ``<file>: <key> must be <rule>, got <value>``. No torch or optuna here.

Example:
    >>> import hwtune
    >>> pi = hwtune.load_profile("raspberry-pi-4")
    >>> pi.latency_source, pi.ram_bytes > 0
    ('predict', True)
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeGuard

from hwtune._io import load_toml
from hwtune._resources import resource_dir, resource_files
from hwtune._util import SAFE_NAME_RULE, is_int, is_num, is_safe_name
from hwtune.errors import ConfigError, UnknownNameError, did_you_mean, reject_unknown_keys
from hwtune.hostcpu import detect_cpu, isa_summary, read_cpuinfo
from hwtune.precision import PRECISIONS

__all__ = [
    "KINDS",
    "LATENCY_SOURCES",
    "DeviceProfile",
    "calibrated_elsewhere",
    "list_profiles",
    "load_profile",
    "profile_files",
    "profile_origin",
    "registered_runtimes",
    "use_runtime_names",
    "user_profile_dir",
]

SCHEMA_VERSION = 1
KINDS = ("cpu", "gpu", "npu", "mcu")
LATENCY_SOURCES = ("measure", "predict")

# A profile's ``runtime`` must be registered in hwtune.runtimes. That registry sits above this module
# (its runtimes import quant, which reads profiles), so instead of importing it, this module is handed
# the registry's name lister when hwtune.runtimes is imported (see use_runtime_names).
_runtime_names: Callable[[], Sequence[str]] | None = None


def use_runtime_names(lister: Callable[[], Sequence[str]] | None) -> None:
    """Check every profile's ``runtime`` against ``lister()`` from now on (None: stop checking).

    :mod:`hwtune.runtimes` installs its ``list_runtimes`` here on import.
    """
    global _runtime_names
    _runtime_names = lister


def registered_runtimes() -> tuple[str, ...] | None:
    """Runtime names a profile may use, or None when the runtime registry is not loaded."""
    return None if _runtime_names is None else tuple(_runtime_names())


def _runtime_problem(value: Any, src: str) -> list[str]:
    """One line when ``value`` is a string that names no registered runtime."""
    names = registered_runtimes()
    if names is None or not isinstance(value, str) or value in names:
        return []
    return [f"{src}: runtime must be a registered runtime ({', '.join(names)}), got {value!r}{did_you_mean(value, names)}"]


@dataclass(frozen=True)
class DeviceProfile:
    """One target device, validated. Sizes in bytes, clocks in GHz, throughput in GFLOP/s."""

    id: str
    name: str
    kind: str
    cores: int
    threads: int
    clock_ghz: float
    peak_gflops: Mapping[str, float]
    bandwidth_gbps: float
    ram_bytes: int
    storage_bytes: int
    precisions: tuple[str, ...]
    runtime: str
    latency_source: str
    vendor: str = ""
    description: str = ""
    isa: tuple[str, ...] = ()
    cpu_model: str = ""
    sources: Mapping[str, str] = field(default_factory=dict)
    calibration: Mapping[str, Any] | None = None
    int8: Mapping[str, Any] | None = None
    detected: bool = False
    path: Path | None = field(default=None, compare=False)
    schema_version: int = SCHEMA_VERSION

    def supports(self, precision: str) -> bool:
        """Whether the device runs ``precision`` natively (a profile lists only those)."""
        return precision in self.precisions

    @property
    def has_vnni(self) -> bool:
        """x86 VNNI (AVX512-VNNI or AVX-VNNI): u8 x s8 products accumulate in int32 without saturation."""
        return any(flag in self.isa for flag in ("avx512_vnni", "avx_vnni", "avx512vnni"))

    @property
    def is_arm(self) -> bool:
        return any(flag in self.isa for flag in ("neon", "asimd", "armv8", "armv7e-m"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the flat field names, sizes in bytes)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> DeviceProfile:
        """Inverse of ``to_dict`` (validated)."""
        reject_unknown_keys(data, {f.name for f in fields(cls)}, source, sep="; ")
        kwargs = dict(data)
        try:
            for key in ("precisions", "isa"):
                if key in kwargs:
                    kwargs[key] = tuple(kwargs[key])
            if kwargs.get("path") is not None:
                kwargs["path"] = Path(kwargs["path"])
            profile = cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from exc
        problems = _check_profile(profile, source)
        if problems:
            raise ConfigError("\n".join(problems))
        return profile

    def to_toml_dict(self) -> dict[str, Any]:
        """The nested TOML layout this profile was (or would be) loaded from."""
        out: dict[str, Any] = {
            "schema_version": self.schema_version,
            "id": self.id,
            "name": self.name,
            "vendor": self.vendor,
            "description": self.description,
            "kind": self.kind,
            "latency": self.latency_source,
            "runtime": self.runtime,
            "precisions": list(self.precisions),
            "compute": {
                "cores": self.cores,
                "threads": self.threads,
                "clock_ghz": self.clock_ghz,
                "isa": list(self.isa),
                "peak_gflops": dict(self.peak_gflops),
            },
            "memory": {
                "ram_kb": self.ram_bytes // 1024,
                "storage_kb": self.storage_bytes // 1024,
                "bandwidth_gbps": self.bandwidth_gbps,
            },
            "sources": dict(self.sources),
        }
        if self.cpu_model:
            out["compute"]["cpu_model"] = self.cpu_model
        if self.calibration is not None:
            out["calibration"] = dict(self.calibration)
        if self.int8 is not None:
            out["int8"] = dict(self.int8)
        return out


# --------------------------------------------------------------------------------------------
# TOML schema: every key, its type check and rule text. Validation collects all problems.



def _positive_int(v: Any) -> TypeGuard[int]:
    return is_int(v) and v > 0


def _positive_num(v: Any) -> bool:
    return is_num(v) and v > 0


def _str(v: Any) -> bool:
    return isinstance(v, str)


def _nonempty_str(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


def _str_list(v: Any) -> TypeGuard[list[str]]:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], bool]:
    return lambda v: v in choices


_Rule = tuple[Callable[[Any], bool], str]

_TOP: dict[str, _Rule] = {
    "schema_version": (lambda v: v == SCHEMA_VERSION, f"the integer {SCHEMA_VERSION}"),
    # The id names files and directories (run directories, report plots): no path separators.
    "id": (is_safe_name, f"a name of {SAFE_NAME_RULE}"),
    "name": (_nonempty_str, "a non-empty string"),
    "vendor": (_str, "a string"),
    "description": (_str, "a string"),
    "kind": (_one_of(KINDS), "one of " + ", ".join(KINDS)),
    "latency": (_one_of(LATENCY_SOURCES), "one of " + ", ".join(LATENCY_SOURCES)),
    "runtime": (_nonempty_str, "a non-empty string naming a registered runtime"),
    "precisions": (
        lambda v: _str_list(v) and bool(v) and all(p in PRECISIONS for p in v),
        "a non-empty list drawn from " + ", ".join(PRECISIONS),
    ),
}
_COMPUTE: dict[str, _Rule] = {
    "detect": (lambda v: isinstance(v, bool), "true or false"),
    "cores": (_positive_int, "an integer > 0"),
    "threads": (_positive_int, "an integer > 0"),
    "clock_ghz": (_positive_num, "a number > 0"),
    "isa": (_str_list, "a list of strings"),
    "cpu_model": (_str, "a string"),
    "peak_gflops": (
        lambda v: isinstance(v, dict) and bool(v) and all(k in PRECISIONS and _positive_num(x) for k, x in v.items()),
        "a table of precision = number > 0 (keys from " + ", ".join(PRECISIONS) + ")",
    ),
}
_MEMORY: dict[str, _Rule] = {
    "ram_kb": (_positive_int, "an integer > 0"),
    "storage_kb": (_positive_int, "an integer > 0"),
    "bandwidth_gbps": (_positive_num, "a number > 0"),
}
_SECTIONS: dict[str, dict[str, _Rule]] = {"compute": _COMPUTE, "memory": _MEMORY}
_FREE_TABLES = ("sources", "calibration")
_REQUIRED_TOP = ("id", "name", "kind", "latency", "runtime", "precisions")
_REQUIRED_COMPUTE = ("cores", "clock_ghz", "peak_gflops")
_REQUIRED_MEMORY = ("ram_kb", "storage_kb", "bandwidth_gbps")


def _check_table(table: Mapping[str, Any], rules: Mapping[str, _Rule], prefix: str, src: str) -> list[str]:
    problems = []
    for key, value in table.items():
        if key not in rules:
            problems.append(f"{src}: unknown key '{prefix}{key}'{did_you_mean(key, rules)}")
            continue
        check, rule = rules[key]
        if not check(value):
            problems.append(f"{src}: {prefix}{key} must be {rule}, got {value!r}")
    return problems


def _validate_toml(raw: Mapping[str, Any], src: str) -> list[str]:
    problems: list[str] = []
    allowed = set(_TOP) | set(_SECTIONS) | set(_FREE_TABLES) | {"int8"}
    top_scalars = {k: v for k, v in raw.items() if k in _TOP or k not in allowed}
    problems += _check_table(top_scalars, _TOP, "", src)
    problems += _runtime_problem(raw.get("runtime"), src)
    for section, rules in _SECTIONS.items():
        table = raw.get(section, {})
        if not isinstance(table, dict):
            problems.append(f"{src}: [{section}] must be a table, got {table!r}")
            continue
        problems += _check_table(table, rules, f"{section}.", src)
    for section in _FREE_TABLES:
        if section in raw and not isinstance(raw[section], dict):
            problems.append(f"{src}: [{section}] must be a table, got {raw[section]!r}")
    sources = raw.get("sources", {})
    if isinstance(sources, dict):
        for k, v in sources.items():
            if not isinstance(v, str):
                problems.append(f"{src}: sources.{k} must be a string naming a public source, got {v!r}")
    calibration = raw.get("calibration")
    if isinstance(calibration, dict):
        if not _nonempty_str(calibration.get("method")):
            problems.append(f"{src}: calibration.method must be a non-empty string, got {calibration.get('method')!r}")
        if "error_pct" in calibration and not (is_num(calibration["error_pct"]) and calibration["error_pct"] >= 0):
            problems.append(f"{src}: calibration.error_pct must be a number >= 0, got {calibration['error_pct']!r}")
    if "int8" in raw:
        problems += int8_table_problems(raw["int8"], src)
    detect = isinstance(raw.get("compute"), dict) and raw["compute"].get("detect") is True
    for key in _REQUIRED_TOP:
        if key not in raw:
            problems.append(f"{src}: missing required key '{key}'")
    compute: Mapping[str, Any] = raw["compute"] if isinstance(raw.get("compute"), dict) else {}
    memory: Mapping[str, Any] = raw["memory"] if isinstance(raw.get("memory"), dict) else {}
    if not detect:
        problems += [f"{src}: missing required key 'compute.{k}'" for k in _REQUIRED_COMPUTE if k not in compute]
        problems += [f"{src}: missing required key 'memory.{k}'" for k in _REQUIRED_MEMORY if k not in memory]
    precisions = raw.get("precisions")
    peak = compute.get("peak_gflops")
    if _str_list(precisions) and isinstance(peak, dict) and not detect:
        for p in precisions:
            if p not in peak:
                problems.append(f"{src}: compute.peak_gflops must give a figure for every listed precision, missing {p!r}")
    threads, cores = compute.get("threads"), compute.get("cores")
    if _positive_int(threads) and _positive_int(cores) and threads > cores:
        problems.append(f"{src}: compute.threads must be <= compute.cores ({cores}), got {threads}")
    if raw.get("latency") == "measure" and not detect:
        problems.append(
            f"{src}: latency = 'measure' is only possible for this machine (compute.detect = true); "
            "a remote device must use latency = 'predict'"
        )
    return problems


def _check_profile(p: DeviceProfile, src: str) -> list[str]:
    """Checks on a built profile (used by ``from_dict``)."""
    problems = []
    if not is_safe_name(p.id):
        problems.append(f"{src}: id must be a name of {SAFE_NAME_RULE}, got {p.id!r}")
    if p.kind not in KINDS:
        problems.append(f"{src}: kind must be one of {', '.join(KINDS)}, got {p.kind!r}")
    if p.latency_source not in LATENCY_SOURCES:
        problems.append(f"{src}: latency_source must be one of {', '.join(LATENCY_SOURCES)}, got {p.latency_source!r}")
    for name in ("cores", "threads", "ram_bytes", "storage_bytes"):
        if not _positive_int(getattr(p, name)):
            problems.append(f"{src}: {name} must be an integer > 0, got {getattr(p, name)!r}")
    for name in ("clock_ghz", "bandwidth_gbps"):
        if not _positive_num(getattr(p, name)):
            problems.append(f"{src}: {name} must be a number > 0, got {getattr(p, name)!r}")
    if not _COMPUTE["peak_gflops"][0](dict(p.peak_gflops) if isinstance(p.peak_gflops, Mapping) else None):
        problems.append(f"{src}: peak_gflops must be {_COMPUTE['peak_gflops'][1]}, got {p.peak_gflops!r}")
    if not all(x in PRECISIONS for x in p.precisions) or not p.precisions:
        problems.append(f"{src}: precisions must be drawn from {', '.join(PRECISIONS)}, got {list(p.precisions)!r}")
    if not _nonempty_str(p.runtime):
        problems.append(f"{src}: runtime must be a non-empty string naming a registered runtime, got {p.runtime!r}")
    problems += _runtime_problem(p.runtime, src)
    if p.int8 is not None:
        problems += int8_table_problems(p.int8, src)
    return problems


# --------------------------------------------------------------------------------------------
# [int8]: the int8 scheme measured on the device (python -m hwtune.device_script; see
# hwtune.int8_scheme). Also the schema of the host's int8 scheme cache file.

def _finite_pos(v: Any) -> bool:
    return is_num(v) and math.isfinite(v) and v > 0


_INT8_KEYS: dict[str, _Rule] = {
    "scheme": (_nonempty_str, "the name of an int8 scheme"),
    "reason": (_str, "a string"),
    "runtime": (_nonempty_str, "a non-empty string naming the runtime measured"),
    "runtime_version": (_str, "a string"),
    "threads": (_positive_int, "an integer > 0"),
    "cpu_model": (_str, "a string"),
    "machine": (_str, "a string"),
    "isa": (_str_list, "a list of strings"),
    "probe": (_str, "a string"),
    "created": (_str, "a string"),
    "runs": (_positive_int, "an integer > 0"),
    "seconds": (lambda v: is_num(v) and math.isfinite(v) and v >= 0, "a number >= 0"),
    "latency_ms": (lambda v: isinstance(v, dict) and bool(v), "a table of scheme = milliseconds"),
    "rel_error": (lambda v: isinstance(v, dict), "a table of scheme = relative output error"),
    "relative": (lambda v: isinstance(v, dict), "a table of scheme = time relative to the round's median"),
}


def int8_table_problems(table: Any, src: str) -> list[str]:
    """Problems of an ``[int8]`` table (one line each, naming ``src``, the key and the value)."""
    from hwtune.device_script import INT8_SCHEMES  # the one list of schemes; numpy only, no torch

    if not isinstance(table, Mapping):
        return [f"{src}: [int8] must be a table, got {table!r}"]
    problems = _check_table(table, _INT8_KEYS, "int8.", src)
    for key in ("scheme", "runtime", "threads", "latency_ms"):
        if key not in table:
            problems.append(f"{src}: missing required key 'int8.{key}'")
    scheme = table.get("scheme")
    if isinstance(scheme, str) and scheme not in INT8_SCHEMES:
        problems.append(f"{src}: int8.scheme must be one of {', '.join(INT8_SCHEMES)}, got {scheme!r}"
                        f"{did_you_mean(scheme, INT8_SCHEMES)}")
    for name, positive in (("latency_ms", True), ("rel_error", False), ("relative", True)):
        values = table.get(name)
        if not isinstance(values, Mapping):
            continue
        for k, v in values.items():
            if k not in INT8_SCHEMES and not (positive and k == "fp32"):
                problems.append(f"{src}: int8.{name} keys must be int8 schemes ({', '.join(INT8_SCHEMES)})"
                                f"{' or fp32' if positive else ''}, got {k!r}{did_you_mean(str(k), INT8_SCHEMES)}")
            elif not (_finite_pos(v) if positive else (is_num(v) and math.isfinite(v) and v >= 0)):
                problems.append(f"{src}: int8.{name}.{k} must be a number {'> 0' if positive else '>= 0'}, got {v!r}")
    latency = table.get("latency_ms")
    if isinstance(scheme, str) and scheme in INT8_SCHEMES and isinstance(latency, Mapping) and scheme not in latency:
        problems.append(f"{src}: int8.latency_ms must give the chosen scheme {scheme!r}, has {sorted(latency)}")
    return problems


# --------------------------------------------------------------------------------------------
# Host detection (for profiles with compute.detect = true).

def _detect_host() -> dict[str, Any]:
    info = read_cpuinfo()
    cpu = detect_cpu()
    isa = cpu.isa
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    clock_ghz = 0.0
    for path in ("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq",):
        try:
            clock_ghz = int(Path(path).read_text().strip()) / 1e6
        except (OSError, ValueError):
            pass
    if not clock_ghz and info.get("cpu MHz"):
        try:
            clock_ghz = float(info["cpu MHz"]) / 1000.0
        except ValueError:
            pass
    clock_ghz = round(clock_ghz or 2.0, 3)
    # FLOPs per cycle per core for fp32: two 256-bit FMA pipes = 2 x 8 lanes x 2 (AVX2+FMA, Zen 2+,
    # Haswell+); 512-bit doubles that; without FMA half. int8 without VNNI goes through
    # vpmaddubsw/vpmaddwd (about 2x the fp32 rate); VNNI makes it about 4x. x86 without
    # avx512_fp16 has no fp16 arithmetic: fp16 graphs are cast to fp32 (no faster).
    if "avx512f" in isa:
        fp32_per_cycle = 64
    elif "avx2" in isa and "fma" in isa:
        fp32_per_cycle = 32
    elif "avx" in isa:
        fp32_per_cycle = 16
    elif "asimd" in isa or "neon" in isa:
        fp32_per_cycle = 8
    else:
        fp32_per_cycle = 8
    fp32 = cores * clock_ghz * fp32_per_cycle
    vnni = any(f in isa for f in ("avx512_vnni", "avx512vnni", "avx_vnni", "asimddp"))
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    storage_kb = shutil.disk_usage(Path.cwd()).total // 1024
    return {
        "cores": cores,
        "clock_ghz": clock_ghz,
        "isa": list(isa),
        "cpu_model": cpu.model,
        "peak_gflops": {"fp32": round(fp32, 1), "fp16": round(fp32, 1), "int8": round(fp32 * (4 if vnni else 2), 1)},
        "ram_kb": mem_kb or 1024 * 1024,
        "storage_kb": storage_kb,
    }


# --------------------------------------------------------------------------------------------
# Loading.

def _profile_from_toml(raw: dict[str, Any], path: Path) -> DeviceProfile:
    src = _display(path)
    problems = _validate_toml(raw, src)
    if problems:
        raise ConfigError("\n".join(problems))
    compute = dict(raw.get("compute", {}))
    memory = dict(raw.get("memory", {}))
    detected = bool(compute.pop("detect", False))
    if detected:
        found = _detect_host()
        for key in ("cores", "clock_ghz", "isa", "cpu_model", "peak_gflops"):
            compute.setdefault(key, found[key])
        memory.setdefault("ram_kb", found["ram_kb"])
        memory.setdefault("storage_kb", found["storage_kb"])
        memory.setdefault("bandwidth_gbps", 20.0)
    cores = int(compute["cores"])
    threads = int(compute.get("threads", cores))
    profile = DeviceProfile(
        id=raw["id"],
        name=raw["name"],
        vendor=raw.get("vendor", ""),
        description=raw.get("description", ""),
        kind=raw["kind"],
        cores=cores,
        threads=min(threads, cores),
        clock_ghz=float(compute["clock_ghz"]),
        peak_gflops={k: float(v) for k, v in compute["peak_gflops"].items()},
        bandwidth_gbps=float(memory["bandwidth_gbps"]),
        ram_bytes=int(memory["ram_kb"]) * 1024,
        storage_bytes=int(memory["storage_kb"]) * 1024,
        precisions=tuple(raw["precisions"]),
        runtime=raw["runtime"],
        latency_source=raw["latency"],
        isa=tuple(compute.get("isa", ())),
        cpu_model=compute.get("cpu_model", ""),
        sources=dict(raw.get("sources", {})),
        calibration=raw.get("calibration"),
        int8=raw.get("int8"),
        detected=detected,
        path=path,
    )
    return profile


def _display(path: Path) -> str:
    """Show bundled files as ``profiles/x.toml``; user files as given."""
    try:
        return str(path.relative_to(resource_dir("profiles").parent))
    except ValueError:
        return str(path)


def user_profile_dir() -> Path:
    """Where user profiles live: ``$XDG_CONFIG_HOME/hwtune/profiles`` (default ``~/.config/hwtune/profiles``).

    A ``<id>.toml`` there shadows the bundled profile of the same id (``hwtune calibrate --host``
    writes ``host.toml`` there); ``hwtune devices`` shows which file each id comes from.
    """
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "hwtune" / "profiles"


def _user_files() -> dict[str, Path]:
    folder = user_profile_dir()
    try:
        return {p.stem: p for p in sorted(folder.glob("*.toml")) if p.is_file()}
    except OSError:
        return {}


def profile_files(*, user: bool = True) -> dict[str, Path]:
    """Profile id -> the file ``load_profile(id)`` reads: user profiles shadow bundled ones of the same id."""
    files = dict(resource_files("profiles"))
    if user:
        files.update(_user_files())
    return dict(sorted(files.items()))


def profile_origin(profile: DeviceProfile) -> str:
    """``user`` (from :func:`user_profile_dir`), ``bundled`` (shipped with hwtune) or ``file`` (a path given)."""
    if profile.path is None:
        return "file"
    path = Path(profile.path).resolve()
    if path.parent == user_profile_dir().resolve():
        return "user"
    if path.parent == resource_dir("profiles").resolve():
        return "bundled"
    return "file"


def list_profiles(*, user: bool = True) -> list[str]:
    """Ids of the device profiles, sorted: the bundled ones and (``user``) those in :func:`user_profile_dir`."""
    return list(profile_files(user=user))


def load_profile(name_or_path: str | Path | DeviceProfile) -> DeviceProfile:
    """Load a profile by id (a user profile first, then the bundled one), or from a ``.toml`` path.

    Raises:
        UnknownNameError: no profile has that id (the message suggests close matches).
        ConfigError: the file is unreadable or invalid (every problem listed, one per line).
    """
    if isinstance(name_or_path, DeviceProfile):
        return name_or_path
    text = str(name_or_path)
    known = profile_files()
    user = _user_files()
    if text in known:
        path = known[text]
    elif text.endswith(".toml") or os.sep in text or Path(text).exists():
        path = Path(text)
    else:
        raise UnknownNameError(
            f"unknown device {text!r}{did_you_mean(text, known)} (hwtune devices lists {len(known)} "
            "profiles; a path to a .toml profile also works)"
        )
    raw = load_toml(path, kind="profile")
    if text in user and path == user[text] and isinstance(raw.get("id"), str) and raw["id"] != text:
        raise ConfigError(
            f"{path}: id must be the file's name {text!r} (a user profile shadows the bundled profile of its "
            f"id), got {raw['id']!r}"
        )
    return _profile_from_toml(raw, path)


def calibrated_elsewhere(profile: DeviceProfile) -> str:
    """``calibrated on AMD EPYC with AVX2, not this CPU (...)``, or '' when that does not apply.

    Applies to profiles of this machine (``compute.detect = true``) whose calibration records the CPU
    it was fitted on (``[calibration.hardware]`` ``cpu_model`` and ``isa``) when that CPU is not the
    one detected now (model name or the ISA flags that pick kernels differ). A calibration that
    does not record its CPU's ISA says that instead: nobody can tell whether it fits.
    """
    cal = profile.calibration
    if not profile.detected or not isinstance(cal, Mapping):
        return ""
    hw = cal.get("hardware")
    hw = hw if isinstance(hw, Mapping) else {}
    model, isa = hw.get("cpu_model"), hw.get("isa")
    if not isinstance(isa, list) or not isinstance(model, str):
        return "calibrated on a CPU it did not record, maybe not this one"
    cpu = detect_cpu()
    if cpu.same_as(model, isa):
        return ""
    return f"calibrated on {model} with {isa_summary(isa)}, not this CPU ({cpu.describe()})"


def with_calibration(profile: DeviceProfile, calibration: Mapping[str, Any] | None) -> DeviceProfile:
    """A copy of ``profile`` carrying ``calibration`` (used by the predictor's calibrate step)."""
    return replace(profile, calibration=dict(calibration) if calibration is not None else None)
