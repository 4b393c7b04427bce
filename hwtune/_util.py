"""Small helpers every unit uses: value checks, safe names, JSON conversion, package versions.

Kept here once (they used to exist in two or three copies that had already drifted apart).
No torch, no numpy at import time.
"""

from __future__ import annotations

import contextlib
import math
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["SAFE_NAME_RULE", "first_line", "is_int", "is_num", "is_safe_name", "jsonable", "safe_name", "versions"]


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_int(v: Any) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    """A finite ``int`` or ``float`` that is not a ``bool`` (NaN and inf are not numbers here)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


#: Names that become file or directory names (profile ids, recipe names, study names): no path
#: separators, no leading dot, nothing a shell or a file system treats specially.
SAFE_NAME_RULE = "1-100 characters from A-Z a-z 0-9 . _ + - starting with a letter or digit"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


def is_safe_name(v: Any) -> bool:
    """A string usable as one file-name component (see ``SAFE_NAME_RULE``)."""
    return isinstance(v, str) and _SAFE_NAME.fullmatch(v) is not None


def safe_name(text: str, default: str = "x") -> str:
    """``text`` made safe: runs of other characters become ``-``, cut to 100 (``default`` if nothing is left)."""
    cleaned = re.sub(r"[^A-Za-z0-9._+-]+", "-", str(text)).lstrip(".-_+")[:100]
    return cleaned if is_safe_name(cleaned) else default


def jsonable(obj: Any) -> Any:
    """``obj`` with mappings/sequences/paths/NumPy scalars turned into JSON types; NaN and inf become None."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    item = getattr(obj, "item", None)
    if callable(item) and type(obj).__module__ == "numpy":
        obj = item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


_VERSION_PACKAGES = ("torch", "onnxruntime", "onnx", "optuna", "numpy")


def versions(extra: Iterable[str] = ()) -> dict[str, str]:
    """Versions of Python, hwtune and the packages whose behaviour a result depends on."""
    from importlib import metadata

    from hwtune._version import __version__

    out = {"python": sys.version.split()[0], "hwtune": __version__}
    for pkg in (*_VERSION_PACKAGES, *extra):
        with contextlib.suppress(Exception):
            out[pkg] = metadata.version(pkg)
    return out
