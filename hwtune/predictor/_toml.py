"""Write the ``[calibration]`` table into a profile TOML, leaving every other line as it was.

The standard library reads TOML but does not write it; the calibration table only holds
strings, numbers, booleans, lists of those and nested tables, so a small emitter suffices.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["dump_table", "replace_table"]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        # JSON string escapes are valid TOML basic-string escapes
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_key(str(k))} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML: {v!r}")


def _inline(v: Any) -> bool:
    """Small tables of scalars go inline (``conv = { overhead_us = 3.1, ... }``); others get a header."""
    return not isinstance(v, Mapping) or (len(v) <= 5 and all(not isinstance(x, Mapping) for x in v.values()))


def dump_table(name: str, table: Mapping[str, Any]) -> str:
    """TOML text of ``[name]`` with nested tables as ``[name.sub]`` headers."""
    lines = [f"[{name}]"]
    nested = []
    for k, v in table.items():
        if _inline(v):
            lines.append(f"{_key(str(k))} = {_value(v)}")
        else:
            nested.append((k, v))
    # a header with no keys of its own is implied by its sub-tables' headers
    out = "\n".join(lines) + "\n" if len(lines) > 1 or not nested else ""
    for i, (k, v) in enumerate(nested):
        out += ("\n" if out else "") + dump_table(f"{name}.{_key(str(k))}", v)
    return out


def _header_name(line: str) -> str | None:
    m = _HEADER.match(line)
    if not m:
        return None
    return re.sub(r"\s*\.\s*", ".", m.group(1)).replace('"', "")


def replace_table(text: str, name: str, table: Mapping[str, Any] | None) -> str:
    """``text`` with the ``[name]`` table (and its ``[name.*]`` sub-tables) replaced or appended.

    Everything outside that table -- comments, key order, other tables -- is kept byte for byte.
    ``table=None`` removes it.
    """
    lines = text.splitlines(keepends=True)
    kept: list[str] = []
    inside = False
    for line in lines:
        header = _header_name(line)
        if header is not None:
            inside = header == name or header.startswith(name + ".")
        if not inside:
            kept.append(line)
    body = "".join(kept).rstrip("\n")
    if table is None:
        return body + "\n"
    return body + "\n\n" + dump_table(name, table)
