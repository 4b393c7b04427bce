"""Where a study keeps its artifacts (trained weights, shipped model files, the parent network).

One store per study, recorded in the study settings (``StudyMeta.artifact_dir``) so every worker,
``export`` and ``finalize`` find the same files:

* a **directory** every worker sees (the run directory's ``artifacts/``, or a network file system);
  for an SQLite study a directory inside the study file's directory is stored **relative** to it,
  so a run directory can be copied anywhere and still export;
* an **S3 bucket** (``s3://bucket/prefix``) through Optuna's ``Boto3ArtifactStore`` (extra
  ``hwtune[s3]``). Credentials and endpoint come from boto3's usual environment
  (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL`` for S3-compatible servers, ...).

A stored location is data from a study file, possibly someone else's: a stored directory is used
only when it lies inside the SQLite study's directory (or is the 0.1.0 layout moved along with it);
any other stored directory must be given again (``--artifacts``) by the user who runs the worker.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hwtune.errors import ConfigError, StudyError

__all__ = [
    "ArtifactLocation",
    "PrefixedArtifactStore",
    "default_location",
    "location_for_reading",
    "location_for_run",
    "parse_location",
    "redact_url",
    "sqlite_dir",
]

_S3 = "s3://"


def sqlite_dir(url: str) -> Path | None:
    """The directory of an SQLite storage URL's file (None for servers and in-memory databases)."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if path and path != ":memory:":
            return Path(path).parent
    return None


class PrefixedArtifactStore:
    """An Optuna artifact store whose ids live under ``prefix/`` of another store (an S3 bucket's key prefix)."""

    def __init__(self, inner: Any, prefix: str) -> None:
        self.inner = inner
        self.prefix = prefix.strip("/")

    def _key(self, artifact_id: str) -> str:
        return f"{self.prefix}/{artifact_id}" if self.prefix else artifact_id

    def open_reader(self, artifact_id: str) -> IO[bytes]:
        return self.inner.open_reader(self._key(artifact_id))

    def write(self, artifact_id: str, content_body: IO[bytes]) -> None:
        self.inner.write(self._key(artifact_id), content_body)

    def remove(self, artifact_id: str) -> None:
        self.inner.remove(self._key(artifact_id))


@dataclass(frozen=True)
class ArtifactLocation:
    """A study's artifact store: a directory (``path``) or an S3 ``bucket`` with a key ``prefix``.

    Attributes:
        path: The directory on this machine (directory stores).
        bucket: S3 bucket name (S3 stores).
        prefix: Key prefix inside the bucket ("" for none).
        stored: What the study records (a path relative to the SQLite file's directory, an absolute
            path, or the ``s3://`` URL).
    """

    path: Path | None = None
    bucket: str | None = None
    prefix: str = ""
    stored: str = "artifacts"

    @property
    def is_s3(self) -> bool:
        return self.bucket is not None

    def describe(self) -> str:
        """Human-readable location (``s3://bucket/prefix`` or the directory)."""
        if self.is_s3:
            return f"{_S3}{self.bucket}/{self.prefix}".rstrip("/")
        return str(self.path)

    def store(self) -> Any:
        """The Optuna artifact store (directories are created on first use).

        Raises:
            ConfigError: ``boto3`` is missing for an S3 store (``pip install 'hwtune[s3]'``).
            StudyError: the directory cannot be created.
        """
        import optuna

        if self.is_s3:
            try:
                import boto3
            except ImportError as exc:
                raise ConfigError(
                    f"artifacts {self.describe()}: S3 stores need boto3 (pip install 'hwtune[s3]')"
                ) from exc
            client = boto3.client("s3")
            return PrefixedArtifactStore(optuna.artifacts.Boto3ArtifactStore(str(self.bucket), client), self.prefix)
        assert self.path is not None  # a directory location always has a path
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StudyError(f"artifact directory {str(self.path)!r}: cannot create it: {exc}") from exc
        return optuna.artifacts.FileSystemArtifactStore(str(self.path))

    def dashboard_args(self) -> str | None:
        """``--artifact-dir DIR`` for ``optuna-dashboard`` (None for S3: the dashboard CLI reads directories only)."""
        return None if self.is_s3 else f"--artifact-dir {self.path}"


def parse_location(text: str | Path, url: str) -> ArtifactLocation:
    """The user's ``--artifacts PATH|s3://bucket/prefix`` for a study in ``url``.

    A directory inside the SQLite file's directory is recorded relative to it.

    Raises:
        ConfigError: an empty value or an ``s3://`` URL without a bucket.
    """
    raw = str(text).strip()
    if not raw:
        raise ConfigError("artifacts: give a directory or s3://bucket/prefix, got an empty value")
    if raw.startswith(_S3):
        bucket, _, prefix = raw[len(_S3) :].partition("/")
        if not bucket:
            raise ConfigError(f"artifacts: {raw!r} names no bucket; expected s3://bucket/prefix")
        return ArtifactLocation(bucket=bucket, prefix=prefix.strip("/"), stored=raw.rstrip("/"))
    if "://" in raw:
        raise ConfigError(f"artifacts: {raw!r} is neither a directory nor s3://bucket/prefix")
    path = Path(raw).expanduser().resolve()
    return ArtifactLocation(path=path, stored=_stored_path(path, url))


def _stored_path(path: Path, url: str) -> str:
    base = sqlite_dir(url)
    if base is not None:
        with contextlib.suppress(ValueError):
            return str(path.relative_to(base.resolve())) or "."
    return str(path)


def default_location(url: str) -> ArtifactLocation:
    """``artifacts/`` next to an SQLite study file (stored relative).

    Raises:
        ConfigError: a server storage (PostgreSQL, MySQL): its workers may run anywhere, so the user
            must name a store they all reach.
    """
    base = sqlite_dir(url)
    if base is None:
        raise ConfigError(
            f"storage {redact_url(url)} is a database server: give --artifacts DIR (a directory every worker sees) "
            "or --artifacts s3://bucket/prefix, so every worker stores and finds the same files"
        )
    return ArtifactLocation(path=base.resolve() / "artifacts", stored="artifacts")


def _inside(path: Path, base: Path) -> bool:
    try:
        path.resolve().relative_to(base.resolve())
    except ValueError:
        return False
    return True


def location_for_run(stored: str | None, url: str, given: str | Path | None, study_name: str) -> ArtifactLocation:
    """The store a worker writes to.

    ``given`` (the user's ``--artifacts``) wins: on another machine the shared directory may be
    mounted elsewhere; the study keeps its recorded location. Otherwise the stored location is used
    when it is an ``s3://`` URL or a directory inside the SQLite study's directory; an SQLite study
    copied elsewhere whose stored absolute path is gone uses ``artifacts/`` next to it; any other
    stored directory is not obeyed.

    Raises:
        ConfigError: no usable location (a server storage without ``--artifacts``, or a stored
            directory outside the run directory).
    """
    if given is not None:
        return parse_location(given, url)
    if not stored:
        return default_location(url)
    if stored.startswith(_S3):
        return parse_location(stored, url)
    base = sqlite_dir(url)
    p = Path(stored)
    if base is not None:
        candidate = p if p.is_absolute() else base / p
        if _inside(candidate, base):
            return ArtifactLocation(path=candidate.resolve(), stored=_stored_path(candidate.resolve(), url))
        if p.is_absolute() and not p.exists() and (base / "artifacts").is_dir():
            return ArtifactLocation(path=(base / "artifacts").resolve(), stored="artifacts")
    raise ConfigError(
        f"study {study_name!r} keeps its artifacts in {stored!r}, outside the run directory; give "
        "--artifacts DIR (where that directory is on this machine) to use it"
    )


def location_for_reading(stored: str | None, url: str) -> ArtifactLocation:
    """The store read-only commands (export, finalize's downloads) read from.

    Relative directories are relative to the SQLite file's directory; an absolute directory that no
    longer exists (a moved run directory) falls back to ``artifacts/`` next to the study file.
    """
    if stored and stored.startswith(_S3):
        return parse_location(stored, url)
    base = sqlite_dir(url)
    if stored:
        p = Path(stored)
        if not p.is_absolute() and base is not None:
            return ArtifactLocation(path=base / p, stored=stored)
        if p.is_dir() or base is None:
            return ArtifactLocation(path=p, stored=stored)
    if base is not None and (base / "artifacts").is_dir():
        return ArtifactLocation(path=base / "artifacts", stored="artifacts")
    return ArtifactLocation(path=Path(stored) if stored else Path("artifacts"), stored=stored or "artifacts")


def redact_url(url: str) -> str:
    """A storage URL without its password (for messages)."""
    head, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    cred, _, host = rest.rpartition("@")
    user = cred.split(":", 1)[0]
    return f"{head}://{user}:***@{host}" if ":" in cred else url
