"""Reading and writing the files hwtune touches: one loader per kind of file, atomic writes.

Every file the tool reads goes through a loader here, which turns I/O, decoding and parsing
failures (``OSError``, ``UnicodeDecodeError``, ``TOMLDecodeError``, ``JSONDecodeError``,
``csv.Error``, a nesting too deep for the parser) into one line naming the file and what was
expected, raised as the caller's ``HwtuneError`` class. Every file it writes goes to a temporary
name in the same directory and is renamed into place, so a failed write (full disk, read-only
file system, a kill) leaves the previous file or nothing, never half a file.

No torch, no numpy: the loaders of device profiles and recipes use this module.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import math
import os
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hwtune._util import first_line
from hwtune.errors import ConfigError, HwtuneError

__all__ = [
    "MAX_INPUT_ELEMENTS",
    "MAX_MODEL_BYTES",
    "MAX_TEXT_BYTES",
    "atomic_output",
    "check_writable_dir",
    "check_zip_sizes",
    "load_csv",
    "load_json",
    "load_toml",
    "parse_toml",
    "read_bytes",
    "read_text",
    "write_atomic",
]

#: Text inputs (profiles, recipes, calibration files) larger than this are refused: a device file
#: or a wrong path (``/dev/zero``) must not make the tool read until memory runs out.
MAX_TEXT_BYTES = 64 << 20

#: Model files from someone else: a declared tensor, a file, or an archive's unpacked contents larger
#: than this is refused before anything is allocated (a crafted size must not exhaust memory or disk).
MAX_MODEL_BYTES = 4 << 30
#: A model input with more elements than this (1 GiB of float32) is refused before an example is made.
MAX_INPUT_ELEMENTS = 1 << 28

ErrorClass = type[HwtuneError]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return first_line(exc)


def check_zip_sizes(path: str | Path, *, what: str, error: ErrorClass = ConfigError) -> list[str]:
    """The member names of a zip archive (``.pt2``, a torch ``.pt``) whose sizes are believable.

    Refused: a file over :data:`MAX_MODEL_BYTES`, members that unpack to more than that in all, or
    a member that unpacks to over 100 times its stored size beyond 64 MiB (a zip bomb: torch's
    archives store their tensors uncompressed).

    Raises:
        ``error``: ``"<path>: refused: <what> ..."`` (or not a zip file).
    """
    import zipfile

    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise error(f"{path}: refused: {what} of {size} bytes (the limit is {MAX_MODEL_BYTES} bytes)")
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise error(f"{path}: not a {what} (not a readable zip file: {_reason(exc)})") from exc
    total = sum(i.file_size for i in infos)
    if total > MAX_MODEL_BYTES:
        raise error(f"{path}: refused: {what} unpacks to {total} bytes (the limit is {MAX_MODEL_BYTES} bytes)")
    for i in infos:
        if i.file_size > (64 << 20) and i.file_size > 100 * max(i.compress_size, 1):
            raise error(
                f"{path}: refused: {what} member {i.filename!r} unpacks to {i.file_size} bytes from "
                f"{i.compress_size} (a zip bomb?)"
            )
    return [i.filename for i in infos]


def read_bytes(
    path: str | Path, *, kind: str = "input", error: ErrorClass = ConfigError, max_bytes: int = MAX_TEXT_BYTES
) -> bytes:
    """The bytes of ``path``, or one ``error`` line naming it (missing, a directory, unreadable, too large).

    Args:
        path: File to read.
        kind: What the file should be, for messages (``"profile"`` -> ``profile file not found``).
        error: The ``HwtuneError`` class to raise.
        max_bytes: Larger files are refused.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except FileNotFoundError as exc:
        raise error(f"{path}: {kind} file not found") from exc
    except IsADirectoryError as exc:
        raise error(f"{path}: is a directory; expected a {kind} file") from exc
    except OSError as exc:
        raise error(f"{path}: cannot read {kind} ({_reason(exc)})") from exc
    if len(data) > max_bytes:
        raise error(f"{path}: larger than {max_bytes >> 20} MiB; expected a {kind} file")
    return data


def _decode(data: bytes, path: Path, kind: str, fmt: str, error: ErrorClass) -> str:
    try:
        text = data.decode("utf-8-sig")  # a BOM (spreadsheet exports) is not an error
    except UnicodeDecodeError as exc:
        raise error(
            f"{path}: not a text file (byte 0x{data[exc.start]:02x} at offset {exc.start} is not UTF-8); "
            f"expected a {kind} in {fmt}"
        ) from exc
    nul = text.find("\0")
    if nul >= 0:
        raise error(f"{path}: not a text file (NUL byte at offset {nul}); expected a {kind} in {fmt}")
    return text


def read_text(
    path: str | Path, *, kind: str = "input", fmt: str = "UTF-8 text", error: ErrorClass = ConfigError
) -> str:
    """The UTF-8 text of ``path``; binary content, I/O problems and oversize files raise one ``error`` line."""
    path = Path(path)
    return _decode(read_bytes(path, kind=kind, error=error), path, kind, fmt, error)


def load_toml(path: str | Path, *, kind: str = "input", error: ErrorClass = ConfigError) -> dict[str, Any]:
    """Parse a TOML file (``tomllib``); every failure is one ``error`` line naming the file.

    Example:
        >>> load_toml("profiles/host.toml", kind="profile")["id"]  # doctest: +SKIP
        'host'
    """
    path = Path(path)
    return parse_toml(read_text(path, kind=kind, fmt="TOML", error=error), source=str(path), kind=kind, error=error)


def parse_toml(text: str, *, source: str, kind: str = "input", error: ErrorClass = ConfigError) -> dict[str, Any]:
    """Parse TOML ``text`` (from ``source``, named in the one-line error)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{source}: not valid TOML ({_reason(exc)}); expected a {kind}") from exc
    except RecursionError as exc:
        raise error(f"{source}: not valid TOML (nested too deeply); expected a {kind}") from exc


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def load_json(path: str | Path, *, kind: str = "input", error: ErrorClass = ConfigError) -> Any:
    """Parse a JSON file; ``NaN``/``Infinity`` and numbers beyond float range are refused (not JSON numbers)."""
    path = Path(path)
    text = read_text(path, kind=kind, fmt="JSON", error=error)
    try:
        return json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise error(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); expected a {kind}"
        ) from exc
    except ValueError as exc:  # from the number hooks above
        raise error(f"{path}: not valid JSON ({_reason(exc)}); expected a {kind}") from exc
    except RecursionError as exc:
        raise error(f"{path}: not valid JSON (nested too deeply); expected a {kind}") from exc


def load_csv(
    path: str | Path, *, kind: str = "input", error: ErrorClass = ConfigError
) -> tuple[list[dict[str, str | None]], list[str]]:
    """Read a CSV file with a header row: ``(rows, columns)``, keys and cells stripped of blanks.

    A row with more cells than the header is an error (one line naming the row as a spreadsheet
    numbers it, header = 1); a row with fewer cells has ``None`` in the missing columns.
    """
    path = Path(path)
    text = read_text(path, kind=kind, fmt="CSV", error=error)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))  # quoted cells may hold newlines
        raw = list(reader)
        columns = [c.strip() for c in (reader.fieldnames or [])]
    except csv.Error as exc:
        raise error(f"{path}: not valid CSV ({_reason(exc)}); expected a {kind}") from exc
    rows: list[dict[str, str | None]] = []
    for n, r in enumerate(raw, start=2):
        if None in r:
            raise error(f"{path}: row {n} has more cells than the header's {len(columns)} columns")
        rows.append({(k or "").strip(): (v.strip() if isinstance(v, str) else v) for k, v in r.items()})
    return rows, columns


# ------------------------------------------------------------------------------------------------
# Writing


def _mkdir(directory: Path, what: str, error: ErrorClass) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise error(f"cannot write {what} into {directory}: it exists and is not a directory") from exc
    except NotADirectoryError as exc:
        raise error(f"cannot write {what} into {directory}: a parent of it is a file, not a directory") from exc
    except OSError as exc:
        raise error(f"cannot create {directory} for {what} ({_reason(exc)})") from exc


def check_writable_dir(directory: str | Path, *, what: str = "output", error: ErrorClass = ConfigError) -> Path:
    """Create ``directory`` if needed and prove a file can be written in it (before long work starts).

    A read-only file system, a path whose parent is a file, an existing file where the directory
    should be, or a full disk give one ``error`` line naming the directory.

    Returns:
        The directory as a ``Path``.
    """
    directory = Path(directory)
    _mkdir(directory, what, error)
    try:
        fd, probe = tempfile.mkstemp(prefix=".hwtune-probe-", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise error(f"cannot write {what} into {directory} ({_reason(exc)})") from exc
    try:
        os.write(fd, b"\0")
    except OSError as exc:
        raise error(f"cannot write {what} into {directory} ({_reason(exc)})") from exc
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(probe)
    return directory


@functools.cache
def _umask() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: read it the portable way (and put it back)
    os.umask(mask)
    return mask


def _file_mode(path: Path) -> int:
    """The existing file's permissions, else those of a new file under the process umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_output(path: str | Path, *, what: str = "", error: ErrorClass = ConfigError) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    Write the content to the yielded path inside the ``with`` block. If the block raises (an
    ``OSError`` from the write becomes one ``error`` line naming ``path``), the temporary file is
    removed and ``path`` keeps its previous content (or stays absent). The temporary name is
    hidden (``.NAME.<random>.tmp``) so no glob of ``*.toml`` or ``*.onnx`` picks it up.

    Example:
        >>> with atomic_output("out/front.json") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("{}")
    """
    path = Path(path)
    what = what or path.name
    _mkdir(path.parent, what, error)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise error(f"cannot write {what} to {path} ({_reason(exc)})") from exc
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # mkstemp makes the file 0600; the result gets the mode a plain open() would give it.
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise error(f"cannot write {what} to {path} ({_reason(exc)})") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: bytes | str, *, what: str = "", error: ErrorClass = ConfigError) -> Path:
    """Write ``data`` (``str`` as UTF-8) to ``path`` through a temporary file and a rename.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        HwtuneError: (``error``) the location cannot be written; ``path`` is then unchanged.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_output(path, what=what, error=error) as tmp, tmp.open("wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)
