"""Strategy ``inherit``: candidates are sub-networks of one parent trained for them (:mod:`hwtune.supernet`).

The parent (the space's largest candidate, trained with the sandwich rule) is trained once per
(recipe space, data, parent budget, seed) and then reused: it is stored as an artifact of the study
(recorded in the study settings as ``parent``) and in a per-user cache
(``$XDG_CACHE_HOME/hwtune/parents``), so a resumed study or a second study over the same recipe and
data (another device, other constraints) does not train it again.

A trial then extracts its candidate from the parent, recalibrates BatchNorm on training images and is
scored as it ships (rung 0, no training: seconds per candidate); promoted candidates are fine-tuned,
distilled from the parent, for the schedule's rung budgets.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from hwtune._io import atomic_output
from hwtune._tempdirs import work_dir
from hwtune._util import jsonable
from hwtune.errors import ConfigError
from hwtune.tuner.pipeline import DistilledPipeline
from hwtune.tuner.storage import optuna_module, upload_to_store

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from hwtune.data import DataSplits
    from hwtune.device import DeviceProfile
    from hwtune.space import Candidate, CandidateLike, SearchSpace, SpaceLike

__all__ = ["DEFAULT_PARENT_EPOCHS", "InheritPipeline", "choose_strategy", "obtain_parent", "parent_key"]

DEFAULT_PARENT_EPOCHS = 3.0
# What tune() uses when the caller names no strategy.
DEFAULT_STRATEGY = "scratch"
BN_RECALIBRATION_IMAGES = 2000


def choose_strategy(space: SpaceLike, strategy: str | None) -> str:
    """The strategy to use: the caller's (checked against the family), else :data:`DEFAULT_STRATEGY`."""
    from hwtune.supernet import is_sliceable, why_not_sliceable
    from hwtune.tuner.config import STRATEGIES

    if strategy == "compress" or getattr(space, "family", None) == "user-model":
        if strategy != "compress":
            raise ConfigError("a user model's derived space is searched by hwtune.compress(), not tune()")
        return "compress"
    if strategy is not None and strategy not in STRATEGIES:
        raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if strategy == "inherit" and not is_sliceable(space):
        raise ConfigError(
            f"strategy 'inherit' needs a sliceable family; {space.family}: {why_not_sliceable(space)} "
            "(use strategy 'scratch')"
        )
    return strategy or DEFAULT_STRATEGY


def parent_key(space_dict: Mapping[str, Any], data_load: Mapping[str, Any] | None, epochs: float, seed: int) -> str:
    """Cache key of a parent: what it was trained on and for how long (not the device or objectives)."""
    payload = {
        "space": {k: v for k, v in space_dict.items() if k not in ("name", "description", "precision")},
        "data": data_load,
        "epochs": float(epochs),
        "seed": int(seed),
    }
    return hashlib.sha256(json.dumps(jsonable(payload), sort_keys=True).encode()).hexdigest()[:20]


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hwtune" / "parents"


def _load_blob(path: Path) -> dict[str, Any] | None:
    import torch

    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a broken cache entry is retrained, not fatal
        return None
    return blob if isinstance(blob, dict) and "state_dict" in blob else None


def _save_cache(blob: Mapping[str, Any], key: str) -> None:
    import torch

    try:
        with atomic_output(_cache_dir() / f"{key}.pt", what="the parent cache") as tmp, open(tmp, "wb") as fh:
            torch.save(dict(blob), fh)
    except ConfigError:
        pass  # an unwritable cache is not an error: the cache is an optimisation, the study artifact is the record


def obtain_parent(
    space: SearchSpace,
    data: DataSplits,
    *,
    key: str,
    epochs: float,
    batch_size: int,
    seed: int,
    artifact_store: Path | Any,
    stored: Mapping[str, Any] | None,
    threads: int | None,
    log: Callable[[str], None],
    train_device: str | None = None,
    amp: str | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained parent and its record (``artifact_id``, ``key``, ``epochs``, ``seconds``, ``source``).

    Order: the study's own parent artifact, the user cache, else train it now (and store both).
    ``artifact_store`` is the study's artifact store: a directory, or an Optuna store (S3).
    """
    from hwtune.supernet import largest_candidate, train_parent

    optuna = optuna_module()
    store = artifact_store
    if isinstance(artifact_store, (str, Path)):
        store = optuna.artifacts.FileSystemArtifactStore(str(artifact_store))
    parent = space.build(largest_candidate(space))
    with work_dir("parent") as tmp:
        path = Path(tmp) / "parent.pt"
        blob = None
        if stored and stored.get("artifact_id") and stored.get("key") == key:
            try:
                optuna.artifacts.download_artifact(
                    artifact_store=store, file_path=str(path), artifact_id=str(stored["artifact_id"])
                )
                blob = _load_blob(path)
            except Exception:  # noqa: BLE001 - a missing artifact falls back to the cache / retraining
                blob = None
            if blob is not None:
                parent.load_state_dict(blob["state_dict"])
                return parent.eval(), {**dict(stored), "source": "study artifact"}
        cached = _cache_dir() / f"{key}.pt"
        blob = _load_blob(cached) if cached.is_file() else None
        source = "cache"
        if blob is None:
            log(f"training the parent network ({epochs:g} epochs, sandwich rule) once for every candidate...")
            t0 = time.monotonic()
            parent, stats = train_parent(
                space,
                data,
                epochs=epochs,
                batch_size=batch_size,
                seed=seed,
                threads=threads,
                parent=parent,
                train_device=train_device,
                amp=amp,
            )
            blob = {"state_dict": parent.state_dict(), "stats": jsonable(stats.to_dict()), "key": key}
            blob["seconds"] = time.monotonic() - t0
            _save_cache(blob, key)
            source = "trained"
            log(f"parent trained in {blob['seconds']:.0f} s")
        else:
            parent.load_state_dict(blob["state_dict"])
        import torch

        torch.save(blob, path)
        artifact_id = upload_to_store(store, path)
    record = {
        "artifact_id": artifact_id,
        "key": key,
        "epochs": float(epochs),
        "seconds": float(blob.get("seconds") or 0.0),
        "stats": blob.get("stats"),
        "source": source,
    }
    return parent.eval(), record


class InheritPipeline(DistilledPipeline):
    """Candidates extracted from a trained parent; rung budgets fine-tune them, distilled from it.

    Args:
        space, device, runtime: as :class:`~hwtune.tuner.pipeline.CandidatePipeline`.
        parent: The trained parent (the space's largest candidate); ``train`` is
            :class:`~hwtune.tuner.pipeline.DistilledPipeline`'s.
        bn_images: Training images used to recalibrate BatchNorm statistics of each extracted candidate.
    """

    space: SearchSpace  # a recipe space: only those share a parent

    def __init__(
        self,
        space: SearchSpace,
        device: DeviceProfile,
        *,
        runtime: str | None = None,
        parent: torch.nn.Module | None = None,
        bn_images: int = BN_RECALIBRATION_IMAGES,
    ) -> None:
        super().__init__(space, device, runtime=runtime, parent=parent)
        self.bn_images = bn_images

    @property
    def strategy(self) -> str:
        return "inherit"

    def initial_model(self, cand: CandidateLike, *, seed: int, data: DataSplits | None = None) -> torch.nn.Module:
        """Extract ``cand`` from the parent and re-estimate its BatchNorm statistics on training images."""
        from hwtune.supernet import extract, recalibrate_bn

        if self.parent is None:
            raise ConfigError("InheritPipeline needs a trained parent (pipeline.parent is None)")
        # No importance re-ordering: the sandwich rule trains the leading channels of every layer as the
        # sub-networks, so the first channels are the right ones (re-sorting by BN scale measured
        # 13-16% instead of 91% validation accuracy on fashion-convnet).
        model = extract(self.parent, self.space, cast("Candidate", cand))  # a recipe space's candidate
        if data is not None:
            recalibrate_bn(
                model, data, n_images=self.bn_images, seed=seed, train_device=self.train_device, amp=self.amp
            )
        return model.eval()
