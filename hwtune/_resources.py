"""Where the bundled data files (``profiles/``, ``models/``) live.

In a checkout (or editable install) they are the repo-root folders; in a wheel they are
shipped as ``hwtune/_data/<kind>`` (see ``[tool.hatch.build.targets.wheel.force-include]``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["resource_dir", "resource_files"]

_PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(kind: str) -> Path:
    """Directory holding the bundled ``kind`` files (``"profiles"`` or ``"models"``)."""
    for candidate in (_PACKAGE_DIR / "_data" / kind, _PACKAGE_DIR.parent / kind):
        if candidate.is_dir():
            return candidate
    # Neither exists: return the checkout path so error messages show where we looked.
    return _PACKAGE_DIR.parent / kind


def resource_files(kind: str, suffix: str = ".toml") -> dict[str, Path]:
    """Bundled files of ``kind`` by name (file stem), sorted."""
    folder = resource_dir(kind)
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.glob(f"*{suffix}"))}
