"""The runtime registry: names -> :class:`Runtime` instances, built-ins imported on first use.

``register_runtime`` adds an instance, ``list_runtimes`` names what is registered (whether or not its
optional extra is installed), ``get_runtime`` returns one (or raises with close matches) and
``runtime_for_file`` picks one by a shipped file's suffix. The built-ins are named here as
``"module:Class"`` strings and imported by :func:`get_runtime`, so ``import hwtune`` stays light and
no runtime module is imported by the registry itself (a runtime module may import the registry).

Importing this module also hands :mod:`hwtune.device` the registered names, so every profile's
``runtime`` is checked against them (device sits below the runtimes).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from hwtune.device import use_runtime_names
from hwtune.errors import ConfigError, UnknownNameError, did_you_mean
from hwtune.runtimes._base import Runtime

__all__ = ["get_runtime", "list_runtimes", "register_runtime", "runtime_for_file", "search_scoring_runtime"]

# name -> "module:Class" for the built-ins (imported lazily), or the instance once created.
_BUILTIN: dict[str, str] = {
    "onnxruntime": "hwtune.runtimes.onnxruntime:OnnxRuntime",
    "torch": "hwtune.runtimes.torch_eager:TorchRuntime",
    "executorch": "hwtune.runtimes.executorch:ExecuTorchRuntime",
    "litert": "hwtune.runtimes.litert:LiteRTRuntime",
    "tflite-micro": "hwtune.runtimes.tflite_micro:TFLiteMicroRuntime",
}
_REGISTRY: dict[str, Runtime | str] = dict(_BUILTIN)


def register_runtime(runtime: Runtime) -> Runtime:
    """Register a :class:`Runtime` instance under ``runtime.name``; a duplicate name raises."""
    if not isinstance(runtime, Runtime):
        raise ConfigError(f"register_runtime needs a Runtime instance, got {type(runtime).__name__}")
    name = runtime.name
    if not name:
        raise ConfigError(f"{type(runtime).__name__}.name is empty")
    if name in _REGISTRY:
        raise ConfigError(f"runtime {name!r} is already registered")
    _REGISTRY[name] = runtime
    return runtime


def list_runtimes() -> list[str]:
    """Registered runtime names, sorted (their extras may or may not be installed)."""
    return sorted(_REGISTRY)


use_runtime_names(list_runtimes)


def get_runtime(name: str) -> Runtime:
    """The registered runtime ``name``.

    Raises:
        UnknownNameError: no runtime of that name (with close matches and the registered names).
    """
    entry = _REGISTRY.get(str(name))
    if entry is None:
        raise UnknownNameError(
            f"unknown runtime {name!r}{did_you_mean(str(name), _REGISTRY)} (registered: {', '.join(list_runtimes())})"
        )
    if isinstance(entry, str):
        module, cls = entry.split(":")
        entry = getattr(importlib.import_module(module), cls)()
        _REGISTRY[str(name)] = entry
    return entry


def runtime_for_file(path: str | Path) -> Runtime:
    """The runtime that runs a shipped file, chosen by its suffix (``.onnx`` -> onnxruntime ...)."""
    suffix = Path(path).suffix.lower()
    for name in list_runtimes():
        rt = get_runtime(name)
        if rt.suffix and rt.suffix == suffix:
            return rt
    known = sorted({get_runtime(n).suffix for n in list_runtimes() if get_runtime(n).suffix})
    raise ConfigError(
        f"{path}: no registered runtime runs {suffix or 'files without a suffix'} files ({', '.join(known)})"
    )


def search_scoring_runtime(name: str) -> str | None:
    """The runtime a search scores ``name``'s shipped files with when it is another one, installed (tflite-micro:
    LiteRT's kernels on the same ``.tflite``), else None: the file is scored on ``name`` itself."""
    if name not in list_runtimes():
        return None
    other = getattr(get_runtime(name), "search_scoring_runtime", None)
    return other if other is not None and get_runtime(other).available() else None
