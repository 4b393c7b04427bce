"""Which int8 scheme to ship on a device: measured where it runs, cached, a labelled rule otherwise.

The choices that decide ONNX Runtime int8 speed on a CPU (u8 or s8 activations, 7-bit weights
``reduce_range``, per-channel or per-tensor weight scales) are picked by a measured
micro-benchmark (:func:`hwtune.device_script.measure_int8_schemes`: one small convolution-heavy
network quantized every offered way with ``quantize_static``, timed interleaved, ~10-20 s):

- **this host** (a profile with ``compute.detect = true``): measured at first use and cached per
  (CPU model, ISA flags, runtime + version, threads, probe version) under
  ``$XDG_CACHE_HOME/hwtune/int8-scheme/``; any change of those measures again. The cache file is
  untrusted input: one that does not read back valid is measured again (and says so).
- **a remote device**: the profile's ``[int8]`` table, which ``python -m hwtune.device_script``
  measures on the device and ``hwtune calibrate`` writes.
- **no measurement**: a rule of thumb by ISA, labelled "rule of thumb, not measured".

Why measured: on an AMD EPYC with AVX-512 VNNI and ONNX Runtime 1.32 the rule "x86 with VNNI ->
s8 activations" shipped ResNet-18 int8 at 53 ms where u8 activations run it in 19 ms.

Example:
    >>> from hwtune.int8_scheme import int8_scheme_for
    >>> s = int8_scheme_for("raspberry-pi-4")
    >>> s.source, s.activation_type
    ('rule', 's8')
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hwtune._io import atomic_output, load_json, read_text, write_atomic
from hwtune.device import DeviceProfile, int8_table_problems, load_profile
from hwtune.device_script import INT8_SCHEMES, PROBE_VERSION
from hwtune.errors import ConfigError

__all__ = [
    "INT8_SCHEMES",
    "Int8Scheme",
    "cache_dir",
    "clear_memo",
    "host_cache_key",
    "int8_isa",
    "int8_scheme_for",
    "rule_of_thumb",
    "scheme_from_table",
    "write_int8_table",
]

RULE_LABEL = "rule of thumb, not measured"
SOURCES = ("measured", "profile", "rule")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(#.*)?$")
# ISA flags that change which int8 kernels ONNX Runtime runs (a host table must match on these).
_DECISIVE_ISA = {"avx2", "avx512f", "avx512_vnni", "avx512vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"}
_MEMO: dict[str, Int8Scheme] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Int8Scheme:
    """One int8 scheme and where the choice came from.

    Attributes:
        name: ``u8s8``, ``s8s8``, ``u8s8-rr`` (7-bit weights), ``u8s8-pt`` (per-tensor) ... (see
            :data:`INT8_SCHEMES`).
        activation_type, reduce_range, per_channel: the ``quantize_static`` settings it stands for.
        source: ``"measured"`` (on this host, possibly from the cache), ``"profile"`` (the profile's
            ``[int8]`` table, measured on the device) or ``"rule"`` (ISA rule of thumb).
        reason: one line saying why, e.g. ``measured: u8s8 1.02 ms vs s8s8 6.45 ms (...)``.
        latency_ms, rel_error: the measured figures per scheme (empty for the rule).
        cached: the host measurement was read from the cache file (``cache_path``).
    """

    name: str
    activation_type: str
    reduce_range: bool
    per_channel: bool
    source: str
    reason: str
    latency_ms: Mapping[str, float] = field(default_factory=dict)
    rel_error: Mapping[str, float] = field(default_factory=dict)
    cached: bool = False
    cache_path: str | None = None

    @property
    def measured(self) -> bool:
        return self.source != "rule"

    @property
    def description(self) -> str:
        """``u8 activations, s8 per-channel weights, 8-bit``: what the name stands for."""
        return (f"{self.activation_type} activations, s8 {'per-channel' if self.per_channel else 'per-tensor'} "
                f"weights, {'7-bit (reduce_range)' if self.reduce_range else '8-bit'}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "activation_type": self.activation_type, "reduce_range": self.reduce_range,
                "per_channel": self.per_channel, "source": self.source, "reason": self.reason,
                "latency_ms": dict(self.latency_ms), "rel_error": dict(self.rel_error), "cached": self.cached,
                "cache_path": self.cache_path}


def int8_isa(isa: Any) -> frozenset[str]:
    """The ISA flags among ``isa`` that change which int8 kernels ONNX Runtime runs (two CPUs that differ in
    them can score one int8 file differently: without VNNI, x86 multiplies u8 by s8 in 16-bit sums that
    saturate).

    >>> sorted(int8_isa(["sse4_2", "avx2", "avx512_vnni", "fma"]))
    ['avx2', 'avx512_vnni']
    """
    return frozenset(_DECISIVE_ISA & {str(f) for f in (isa or ())})


def _scheme(name: str, source: str, reason: str, **kw: Any) -> Int8Scheme:
    s = INT8_SCHEMES[name]
    return Int8Scheme(name=name, activation_type=s["activation_type"], reduce_range=s["reduce_range"],
                      per_channel=s["per_channel"], source=source, reason=reason, **kw)


def rule_of_thumb(profile: DeviceProfile) -> Int8Scheme:
    """The ISA rule, for a profile with no measurement (labelled "rule of thumb, not measured").

    x86: u8 activations (ONNX Runtime's MLAS u8 x s8 kernels; measured 2.5-6x faster than s8 x s8
    with VNNI on ORT 1.32, 1.2-1.7x without), with ``reduce_range`` where there is no VNNI
    (``vpmaddubsw`` saturates int16 pair sums of 8-bit weights). ARM, GPUs, NPUs, MCUs: s8
    activations and weights (SDOT/TFLite-Micro/TensorRT kernels expect symmetric s8).
    """
    x86 = any(flag in profile.isa for flag in ("sse4_2", "avx", "avx2", "avx512f"))
    if x86 and not profile.has_vnni:
        return _scheme("u8s8-rr", "rule", f"{RULE_LABEL}: {profile.id}: x86 without VNNI -> u8 activations, s8 "
                                          "weights, reduce_range (7-bit)")
    if x86:
        return _scheme("u8s8", "rule", f"{RULE_LABEL}: {profile.id}: x86 with VNNI -> u8 activations, s8 weights, "
                                       "full range")
    isa = ", ".join(profile.isa) or "no ISA flags"
    return _scheme("s8s8", "rule", f"{RULE_LABEL}: {profile.id}: {profile.kind} ({isa}) -> s8 activations and weights")


def scheme_from_table(table: Mapping[str, Any], *, source: str, where: str, cached: bool = False,
                      cache_path: str | None = None) -> Int8Scheme:
    """An :class:`Int8Scheme` from a validated ``[int8]`` table (a profile's, or the host cache's)."""
    reason = str(table.get("reason") or f"measured: {table['scheme']} {table['latency_ms'][table['scheme']]} ms")
    if source == "profile":
        reason = f"{where} [int8], measured on the device: {reason}"
    return _scheme(str(table["scheme"]), source, reason, latency_ms=dict(table["latency_ms"]),
                   rel_error=dict(table.get("rel_error") or {}), cached=cached, cache_path=cache_path)


# --------------------------------------------------------------------------------------------
# The host: measured at first use, cached per (CPU model, ISA, runtime + version, threads).


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/hwtune/int8-scheme`` (``~/.cache/hwtune/int8-scheme``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hwtune" / "int8-scheme"


def host_cache_key(profile: DeviceProfile, threads: int | None = None) -> dict[str, Any]:
    """What a host measurement is valid for; a change of any field measures again."""
    import onnxruntime

    return {"cpu_model": profile.cpu_model, "isa": sorted(profile.isa), "runtime": "onnxruntime",
            "runtime_version": onnxruntime.__version__, "threads": int(threads or profile.threads),
            "probe_version": PROBE_VERSION}


def _key_digest(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(dict(key), sort_keys=True).encode()).hexdigest()[:16]


def _read_cache(path: Path, key: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """The cached ``[int8]`` table for ``key``, or ``(None, why not)``; never raises on a bad file."""
    if not path.exists():
        return None, None
    try:
        data = load_json(path, kind="int8 scheme cache")
    except ConfigError as exc:
        return None, str(exc)
    if not isinstance(data, dict) or not isinstance(data.get("table"), dict):
        return None, f"{path}: expected an object with 'key' and 'table'"
    if data.get("key") != dict(key):
        return None, f"{path}: measured for {data.get('key')!r}, this host is {dict(key)!r}"
    problems = int8_table_problems(data["table"], str(path))
    if problems:
        return None, problems[0]
    return data["table"], None


def _measure_host(profile: DeviceProfile, key: Mapping[str, Any]) -> Int8Scheme:
    from hwtune.device_script import measure_int8_schemes

    path = cache_dir() / f"{_key_digest(key)}.json"
    table, why = _read_cache(path, key)
    if table is not None:
        return scheme_from_table(table, source="measured", where=str(path), cached=True, cache_path=str(path))
    table = measure_int8_schemes(int(key["threads"]), isa=profile.isa)
    problems = int8_table_problems(table, "int8 scheme measurement")
    if problems:  # pragma: no cover - the measurement writes what the validator reads
        raise ConfigError("\n".join(problems))
    try:
        write_atomic(path, json.dumps({"key": dict(key), "table": table}, indent=1), what="int8 scheme cache")
    except ConfigError:
        path_text = None  # a read-only cache dir: measured again next process, never an error
    else:
        path_text = str(path)
    scheme = scheme_from_table(table, source="measured", where=str(path), cache_path=path_text)
    if why:
        scheme = _with_reason(scheme, f"{scheme.reason}; cache ignored ({why})")
    return scheme


def _with_reason(s: Int8Scheme, reason: str) -> Int8Scheme:
    return replace(s, reason=reason)


def int8_scheme_for(device: str | Path | DeviceProfile | None = None, *, threads: int | None = None,
                    measure: bool = True) -> Int8Scheme:
    """The int8 scheme to ship on ``device`` (default: this host) with ONNX Runtime, and why.

    Args:
        device: profile, id or path. A detected host profile is measured here (first use; then
            the cache); a remote profile reads its ``[int8]`` table; else the rule of thumb.
        threads: intra-op threads of the host measurement (default: the profile's).
        measure: False gives the cached/profile figure or the rule, never a new measurement.

    Raises:
        ConfigError / UnknownNameError: the profile cannot be loaded.
    """
    profile = load_profile(device if device is not None else "host")
    table = profile.int8
    if table is not None and table.get("runtime") == "onnxruntime" and not (
            profile.detected and (table.get("cpu_model") != profile.cpu_model
                                  or int8_isa(table.get("isa")) != int8_isa(profile.isa))):
        # a detected host uses its profile's table only when it was measured on this CPU
        return scheme_from_table(table, source="profile", where=str(profile.path or profile.id))
    if not profile.detected:
        return rule_of_thumb(profile)
    key = host_cache_key(profile, threads)
    digest = _key_digest(key)
    with _LOCK:
        if digest in _MEMO:
            return _MEMO[digest]
        if not measure:
            table, _ = _read_cache(cache_dir() / f"{digest}.json", key)
            if table is None:
                return rule_of_thumb(profile)
            return scheme_from_table(table, source="measured", where="cache", cached=True)
        scheme = _measure_host(profile, key)
        _MEMO[digest] = scheme
        return scheme


def clear_memo() -> None:
    """Forget the in-process results (the cache files stay)."""
    with _LOCK:
        _MEMO.clear()


# --------------------------------------------------------------------------------------------
# Writing the [int8] table into a profile TOML (hwtune calibrate).


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{k if _BARE_KEY.match(k) else json.dumps(k)} = {_toml_value(x)}"
                                for k, x in v.items()) + " }"
    raise ConfigError(f"[int8] value {v!r} cannot be written to TOML")


def write_int8_table(profile_path: str | Path, table: Mapping[str, Any], *, base: str | Path | None = None) -> Path:
    """Replace (or add) the ``[int8]`` table of a profile TOML, every other line kept; atomic.

    ``base``: start from this profile file instead of ``profile_path``'s own content. The table is
    validated first (``source`` names where it came from in errors), and the written file must load
    as a profile before it replaces the old one.
    """
    path = Path(profile_path)
    problems = int8_table_problems(table, f"{path}: [int8]")
    if problems:
        raise ConfigError("\n".join(problems))
    lines = read_text(Path(base) if base is not None else path, kind="device profile").splitlines()
    kept: list[str] = []
    skipping = False
    for line in lines:
        header = _HEADER.match(line)
        if header:
            name = header.group(1).strip()
            skipping = name == "int8" or name.startswith("int8.")
        if not skipping:
            kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    body = ["", "# Measured by python -m hwtune.device_script (int8 scheme probe); written by hwtune calibrate.",
            "[int8]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    text = "\n".join(kept + body) + "\n"
    with atomic_output(path, what="device profile") as tmp:
        tmp.write_text(text)
        load_profile(tmp)
    return path
