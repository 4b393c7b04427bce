"""The IDX file format of MNIST and Fashion-MNIST (gzip-compressed or plain), read with numpy.

Format (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"): two zero bytes, a type code,
the number of dimensions, one big-endian 32-bit size per dimension, then the data, big-endian.
Every problem -- missing, unreadable, not gzip, truncated, a bad header -- is one ``DataError``
line naming the file and what was expected.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from hwtune.errors import DataError

__all__ = ["MAX_IDX_BYTES", "parse_idx", "read_idx"]

_IDX_DTYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
#: Decompressed size above which a file is refused (Fashion-MNIST's largest file is 47 MB): a
#: small corrupt or hostile .gz must not inflate until memory runs out.
MAX_IDX_BYTES = 4 << 30


def read_idx(path: str | Path, *, ndim: int | None = None, dtype: str | None = None) -> np.ndarray:
    """Read an IDX file (gzip-compressed or plain) into a numpy array.

    Args:
        path: File to read; ``.gz`` files are decompressed.
        ndim: Expected number of dimensions (3 for images, 1 for labels), checked if given.
        dtype: Expected numpy dtype code (e.g. ``"u1"``), checked if given.

    Raises:
        DataError: The file is missing, truncated, not gzip, has a wrong magic number, or its size
            does not match its header. The message names the file and what was expected.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                raw = fh.read(MAX_IDX_BYTES + 1)
        else:
            with path.open("rb") as fh:
                raw = fh.read(MAX_IDX_BYTES + 1)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except IsADirectoryError as exc:
        raise DataError(f"{path}: is a directory; expected an IDX file") from exc
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise DataError(f"{path}: not a readable gzip file (truncated or corrupt?): {exc}") from exc
    if len(raw) > MAX_IDX_BYTES:
        raise DataError(f"{path}: more than {MAX_IDX_BYTES >> 30} GiB of data; expected an IDX file")
    return parse_idx(raw, str(path), ndim=ndim, dtype=dtype)


def parse_idx(raw: bytes, where: str, *, ndim: int | None = None, dtype: str | None = None) -> np.ndarray:
    """The array in the IDX bytes ``raw`` (``where`` names them in errors); see :func:`read_idx`."""
    if len(raw) < 4:
        raise DataError(f"{where}: {len(raw)} bytes is too short for an IDX header (expected >= 4)")
    zero, code, dims = int.from_bytes(raw[0:2], "big"), raw[2], raw[3]
    if zero != 0 or code not in _IDX_DTYPES:
        raise DataError(
            f"{where}: bad IDX magic number 0x{raw[:4].hex()}; expected 0x0000 then a type code "
            f"(0x08 = uint8) and the number of dimensions, e.g. 0x00000803 for images"
        )
    np_dtype = np.dtype(_IDX_DTYPES[code])
    if dtype is not None and np_dtype != np.dtype(dtype):
        raise DataError(f"{where}: IDX element type is {np_dtype}, expected {np.dtype(dtype)}")
    if ndim is not None and dims != ndim:
        raise DataError(f"{where}: IDX file has {dims} dimensions, expected {ndim}")
    header = 4 + 4 * dims
    if len(raw) < header:
        raise DataError(f"{where}: truncated IDX header ({len(raw)} bytes, expected {header})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    # Python integers: a hostile header must not overflow the size computation.
    expected = header + math.prod(shape) * np_dtype.itemsize
    if len(raw) != expected:
        raise DataError(
            f"{where}: IDX header says shape {shape} ({expected} bytes) but the file has {len(raw)} bytes"
            + (" (truncated)" if len(raw) < expected else " (trailing data)")
        )
    return np.frombuffer(raw, dtype=np_dtype, offset=header).reshape(shape)
