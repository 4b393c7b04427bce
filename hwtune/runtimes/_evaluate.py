"""Accuracy and cross-entropy of a loaded model on one split — the same loop for every runtime.

The subset is fixed (``limit`` samples drawn with seed 0, in index order), so a torch module and the
file it shipped as are scored on the same images; a file exported with a fixed batch dimension is
fed batches of exactly that size, the last one zero-padded (the padding's outputs are dropped).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hwtune._util import is_int
from hwtune.errors import ConfigError, ModelError
from hwtune.records import VersionedRecord

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from hwtune.runtimes._base import LoadedModel

__all__ = ["DEFAULT_EVAL_BATCH", "EvalResult", "check_eval_args", "eval_indices", "evaluate_loaded", "score_logits"]

# Torch CPU inference of these small CNNs is 1.2-1.8x faster per image at batch 64 than at 512
# (a 512 batch of 16x28x28 activations is 25 MB and spills out of cache); ONNX Runtime is flat
# between 64 and 512. Measured with convnet (16, 32) and (16, 32, 64), 1 thread.
DEFAULT_EVAL_BATCH = 64


@dataclass(frozen=True)
class EvalResult(VersionedRecord):
    """Accuracy (a fraction in [0, 1]), mean cross-entropy loss and sample count of one evaluation.

    Attributes:
        accuracy: Top-1 accuracy on the ``n`` samples.
        loss: Mean cross-entropy (natural log) of the logits.
        n: Samples evaluated.
        seconds: Wall time of the evaluation (loading excluded).
        runtime: Registered name of the runtime that ran the model.
    """

    accuracy: float
    loss: float
    n: int
    seconds: float = 0.0
    runtime: str = "torch"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalResult:
        """Unlike other records, keys this release does not know are skipped (a newer writer's extras)."""
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


# Samples read from the dataset at once by an evaluation (its batches are slices of them).
FETCH_CHUNK = 512
# The subset drawn for ``limit`` is always this seed's: results on it are comparable across calls.
SUBSET_SEED = 0


def check_eval_args(dataset: Any, *, batch_size: Any, limit: Any) -> int:
    """Validate an evaluation's arguments; returns the number of samples it will score.

    Raises:
        ConfigError: ``dataset`` is a whole ``DataSplits``, empty, or a setting is out of range.
    """
    from hwtune.data import DataSplits

    if isinstance(dataset, DataSplits):
        raise ConfigError("evaluate() needs one split: pass data.val (model selection) or data.test (final report)")
    if not is_int(batch_size) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if limit is not None and (not is_int(limit) or limit < 1):
        raise ConfigError(f"limit must be a positive integer or None, got {limit!r}")
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise ConfigError("cannot evaluate on an empty dataset")
    return n


def eval_indices(size: int, n: int) -> np.ndarray:
    """Indices of the ``n`` samples scored out of ``size``: all of them, or a fixed random subset (seed 0).

    A random subset rather than the first ``n``: a user's own split may be sorted by class.
    """
    import numpy as np

    if n >= size:
        return np.arange(size)
    return np.sort(np.random.default_rng(SUBSET_SEED).choice(size, size=n, replace=False))


def evaluate_loaded(
    loaded: LoadedModel,
    dataset: Any,
    *,
    batch_size: int,
    limit: int | None = None,
    runtime: str,
) -> EvalResult:
    """Accuracy and mean cross-entropy of ``loaded`` on ``dataset`` (one split).

    Args:
        loaded: A model loaded by a runtime (:meth:`hwtune.runtimes.Runtime.load`).
        dataset: One split, e.g. ``splits.val`` (model selection) or ``splits.test`` (final report):
            items are ``(image tensor, int label)``.
        batch_size: Samples per run; replaced by ``loaded.fixed_batch`` when the file has one.
        limit: Score a fixed random subset (seed 0) of this many samples.
        runtime: Name recorded in the result.

    Raises:
        ConfigError: ``dataset`` is a whole ``DataSplits`` or a setting is out of range.
        ModelError: The output is not ``(batch, num_classes)`` or a label is out of range.
    """
    import numpy as np

    n = check_eval_args(dataset, batch_size=batch_size, limit=limit)
    fixed = loaded.fixed_batch
    if fixed is not None:
        batch_size = fixed  # a static batch dimension (1 for most edge exports) must be fed exactly
    start = time.perf_counter()
    correct, loss_sum = 0, 0.0
    for x, y in _batches(dataset, n, batch_size):
        arr = np.ascontiguousarray(x, dtype=np.float32)
        m = arr.shape[0]
        if fixed is not None and m < fixed:
            arr = np.concatenate([arr, np.zeros((fixed - m, *arr.shape[1:]), dtype=np.float32)])
        logits = np.asarray(loaded.run(arr))[:m]
        c, s = score_logits(logits, y)
        correct += c
        loss_sum += s
    return EvalResult(
        accuracy=correct / n, loss=loss_sum / n, n=n, seconds=time.perf_counter() - start, runtime=runtime
    )


def _batches(dataset: Any, n: int, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The scored samples in ``batch_size`` runs, read from ``dataset`` a whole chunk at a time.

    The dataset is read in chunks of at least ``FETCH_CHUNK`` samples (a whole number of batches), and
    the runtime's batches are numpy slices of a chunk: the same batches as reading each one on its own,
    without a torch gather per batch. Per image (an edge file with a fixed batch of 1), that gather and its
    thread wake-ups cost more than running a small int8 CNN in LiteRT: 2,000 CIFAR-10 images through an int8
    ResNet took 16.9 s one at a time and 0.45 s in chunks on this 2-core host while it was busy (1.88 s and 0.39 s
    quiet, under a profiler).
    """
    import torch

    from hwtune.data import iter_batches

    chunk = batch_size * max(1, -(-FETCH_CHUNK // batch_size))
    idx = torch.from_numpy(eval_indices(len(dataset), n))
    for x, y in iter_batches(dataset, list(idx.split(chunk))):
        xs, ys = x.detach().cpu().numpy(), y.detach().cpu().numpy().astype("int64", copy=False)
        for start in range(0, xs.shape[0], batch_size):
            yield xs[start : start + batch_size], ys[start : start + batch_size]


def score_logits(logits: np.ndarray, labels: np.ndarray) -> tuple[int, float]:
    """(correct predictions, summed cross-entropy) of one batch; checks the output's shape and the labels."""
    import numpy as np

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    if z.ndim != 2 or z.shape[0] != y.shape[0]:
        raise ModelError(f"model output has shape {tuple(z.shape)}; expected (batch={y.shape[0]}, num_classes)")
    if y.size and (int(y.max()) >= z.shape[1] or int(y.min()) < 0):
        bad = int(y.max()) if int(y.max()) >= z.shape[1] else int(y.min())
        raise ModelError(f"label {bad} is out of range for a model with {z.shape[1]} outputs")
    # log-softmax in float64: exact enough that torch and ONNX results compare at 1e-6
    zmax = z.max(axis=1, keepdims=True)
    log_norm = zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1))
    loss = float((log_norm - z[np.arange(len(y)), y]).sum())
    correct = int((z.argmax(axis=1) == y).sum())
    return correct, loss
