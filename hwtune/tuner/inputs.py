"""What a search is over: the space (recipe), the data, and the Optuna parameters they become.

Also the study-settings check a resume runs (``check_meta``): a study is resumed only with the
settings it was created with; the names and run directory a study gets (``check_study_name``,
``run_dir``: never outside ``hwtune-runs/`` unless the user names another directory); the
data/model agreement checked before any trial (``check_data_fits``); and the re-use of a study's
stored data settings (``load_stored_data``): a study is data from possibly someone else, so its
settings are validated like user input, never download, and name paths only inside its run directory.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune._io import parse_toml, read_text
from hwtune._util import SAFE_NAME_RULE, is_num, is_safe_name, jsonable, safe_name
from hwtune.compression.user_space import UserModelSpace
from hwtune.errors import ConfigError, DataError, StudyError, reject_unknown_keys
from hwtune.space import SearchSpace, SpaceLike, list_recipes, space_from_dict

if TYPE_CHECKING:  # pragma: no cover
    from hwtune.data import DataSplits
    from hwtune.space import CandidateLike

__all__ = [
    "DEFAULT_RUNS_DIR",
    "candidate_seed",
    "check_data_fits",
    "check_meta",
    "check_study_name",
    "data_spec",
    "default_study_name",
    "distributions",
    "extreme_candidate",
    "input_spec",
    "load_data",
    "load_stored_data",
    "resolve_space",
    "run_dir",
    "space_from_info",
    "space_size",
    "stage_precision_of",
]


def resolve_space(space_or_recipe: Any) -> tuple[SpaceLike, dict[str, Any]]:
    if isinstance(space_or_recipe, UserModelSpace):  # a user model's derived space (hwtune.compress)
        user = space_or_recipe
        return user, {"name": user.name, "path": None, "text": None, "space": user.to_dict()}
    space: SearchSpace
    if isinstance(space_or_recipe, SearchSpace):
        space = space_or_recipe
        src = getattr(space, "path", None) or getattr(space, "source", None)
        name = getattr(space, "name", None) or (Path(src).stem if src else space.family)
    else:
        space = SearchSpace.from_recipe(space_or_recipe)
        src = getattr(space, "path", None) or getattr(space, "source", None)
        name = getattr(space, "name", None) or str(space_or_recipe)
    text = None
    if src and Path(str(src)).is_file():
        text = read_text(str(src), kind="recipe", fmt="TOML")
    info = {"name": str(name), "path": None if not src else str(src), "text": text, "space": _space_dict(space)}
    return space, info


def _space_dict(space: SpaceLike) -> dict[str, Any]:
    to_dict = getattr(space, "to_dict", None)
    if callable(to_dict):
        with contextlib.suppress(Exception):
            return jsonable(to_dict())
    return {
        "family": space.family,
        "knobs": {k: list(v) for k, v in space.knob_choices.items()},
        "precisions": list(space.precision_choices),
    }


def space_from_info(info: Mapping[str, Any]) -> SpaceLike:
    """The search space a study was created with: a stored space of another kind than a recipe (a user
    model's, kind ``compress``) by its kind's ``from_dict`` (``hwtune.space.space_from_dict``); a recipe from
    its stored text first, else a bundled name.

    The stored text is what the study searched; a file at the stored path may have changed since
    (or be someone else's path), so it is not read.

    Raises:
        StudyError: the stored recipe is not valid TOML, or no text is stored and the name is not bundled.
        ConfigError: the stored recipe is invalid (every problem, one line each).
    """
    stored = info.get("space")
    if isinstance(stored, Mapping) and stored.get("kind") is not None:  # recipes are stored without a kind
        try:
            return space_from_dict(stored)
        except (ConfigError, KeyError, TypeError, ValueError) as exc:
            raise StudyError(f"the study's stored space cannot be rebuilt: {exc}") from exc
    name = safe_name(Path(str(info.get("path") or info.get("name") or "recipe")).stem, default="recipe")
    text = info.get("text")
    if isinstance(text, str) and text:
        where = f"recipe {name!r} stored in the study"
        raw = parse_toml(text, source=where, kind="recipe", error=StudyError)
        return SearchSpace.from_dict(raw, source=where, name=name)
    bundled = info.get("name")
    if isinstance(bundled, str) and bundled in list_recipes():
        return SearchSpace.from_recipe(bundled)
    raise StudyError(
        f"the study stores no recipe text and {bundled!r} is not a bundled recipe ({', '.join(list_recipes())})"
    )


def input_spec(space: SpaceLike) -> tuple[int, int, int]:
    """(channels, size, num_classes) of the space's input."""
    inp: Any = space.input  # an InputSpec; a duck-typed space may give a mapping or a (channels, size) tuple
    if isinstance(inp, Mapping):
        ch, size = int(inp["channels"]), int(inp["size"])
    elif hasattr(inp, "channels"):
        ch, size = int(inp.channels), int(inp.size)
    else:
        ch, size = int(inp[0]), int(inp[1])
    return ch, size, int(space.num_classes)


def data_spec(data: Any, space: SpaceLike | None, val_data: Any = None) -> tuple[dict[str, Any] | None, Any]:
    """(reloadable load_dataset kwargs or None, DataSplits or None if not loaded yet).

    ``val_data`` (a name, a directory or a torch dataset) is a held-out validation set that replaces
    the split carved from the training data; a name or directory is stored with the load settings.
    """
    load, splits = _data_spec(data, space)
    if val_data is None:
        return load, splits
    if splits is not None:
        return None, with_held_out(splits, val_data)
    assert load is not None  # one of the two is always set
    if isinstance(val_data, (str, Path)):
        return {**load, "val_data": str(val_data)}, None
    return None, with_held_out(load_data(load), val_data)


def _data_spec(data: Any, space: SpaceLike | None) -> tuple[dict[str, Any] | None, Any]:
    from hwtune.data import DataSplits

    if isinstance(data, DataSplits):
        return None, data
    if data is None:
        name = getattr(space, "dataset", None) or "fashion-mnist"
        return {"name_or_path": str(name)}, None
    if isinstance(data, (str, Path)):
        return {"name_or_path": str(data)}, None
    if isinstance(data, Mapping):
        kw = dict(data)
        if "name" in kw:
            kw["name_or_path"] = kw.pop("name")
        kw.setdefault("name_or_path", getattr(space, "dataset", None) or "fashion-mnist")
        kw["name_or_path"] = str(kw["name_or_path"])
        _check_spec_keys(kw, "data", ConfigError)
        return kw, None
    raise ConfigError(
        f"data must be a dataset name, a mapping of load_dataset arguments or DataSplits, got {type(data).__name__}"
    )


def _load_kwargs() -> tuple[str, ...]:
    from hwtune.data import load_dataset

    return (*inspect.signature(load_dataset).parameters, "normalize", "val_data")


def _check_spec_keys(spec: Mapping[str, Any], where: str, error: type[ConfigError | StudyError]) -> None:
    reject_unknown_keys(map(str, spec), _load_kwargs(), where, sep="; ", error=error)


def load_data(spec: Mapping[str, Any]) -> DataSplits:
    """``hwtune.data.load_dataset(**spec)`` for a spec the user gave (a study's: :func:`load_stored_data`)."""
    from hwtune.data import load_dataset

    kw = dict(spec)
    _check_spec_keys(kw, "data", ConfigError)
    name = kw.pop("name_or_path")
    normalize = kw.pop("normalize", None)  # the user's preprocessing (hwtune.compress normalize=)
    val_data = kw.pop("val_data", None)
    if val_data is not None:
        kw["val_fraction"] = 0.0  # the user's held-out set replaces the carved validation split
    splits = load_dataset(name, **kw)
    if val_data is not None:
        splits = with_held_out(splits, val_data, image_size=kw.get("image_size"), limit=kw.get("val_limit"))
    if normalize:
        from hwtune.normalization import with_normalization

        splits = with_normalization(splits, normalize["mean"], normalize["std"])
    return splits


def with_held_out(splits: DataSplits, val_data: Any, *, image_size: Any = None, limit: int | None = None) -> DataSplits:
    """``splits`` with its validation split replaced by every image of ``val_data``'s training split.

    ``val_data`` is a dataset name or directory (IDX files or an ImageFolder), or a torch dataset;
    images are normalized with ``splits``' statistics, as the training images are.

    Raises:
        DataError: ``val_data`` has other image shapes or classes than ``splits``, or is not in memory.
    """
    import dataclasses

    from hwtune.data import TensorData, from_datasets, load_dataset

    if isinstance(val_data, (str, Path)):
        held = load_dataset(val_data, val_fraction=0.0, image_size=image_size).train
        where = f"validation data {str(val_data)!r}"
    else:
        held = from_datasets(val_data, val_fraction=0.0, mean=splits.mean, std=splits.std).train
        where = "validation data"
    if isinstance(held, TensorData):
        if not held.images.is_floating_point():
            held = TensorData(held.images, held.labels, mean=splits.mean, std=splits.std)
        if limit:
            held = TensorData(held.images[:limit], held.labels[:limit], mean=held.mean, std=held.std)
        shape, top = tuple(held.images.shape[1:]), int(held.labels.max()) if len(held.labels) else 0
    elif isinstance(val_data, (str, Path)):  # decoded lazily with its own statistics: not the training data's
        raise DataError(f"{where}: too large to hold in memory; give a smaller held-out set")
    else:  # the user's dataset, normalized by its own transform
        shape, top = tuple(held[0][0].shape), 0
    if shape != tuple(splits.input_shape) or top >= splits.num_classes:
        raise DataError(
            f"{where}: images are {'x'.join(map(str, shape))} with labels up to {top}, but the training "
            f"data's are {'x'.join(map(str, splits.input_shape))} with {splits.num_classes} classes"
        )
    return dataclasses.replace(splits, val=held)


def _inside(path: Path, base: Path | None) -> bool:
    if base is None:
        return False
    try:
        path.resolve().relative_to(Path(base).resolve())
    except (ValueError, OSError):
        return False
    return True


def _stored_spec(spec: Any, study: str, run: Path | None) -> dict[str, Any]:
    """A study's stored data settings validated like user input (no paths outside ``run``)."""
    from hwtune.data import is_dataset_name

    where = f"study {study!r}: stored data settings"
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name_or_path"), str):
        raise StudyError(f"{where} must be a mapping with a dataset name_or_path, got {str(spec)[:80]!r}")
    _check_spec_keys(spec, where, StudyError)
    kw = dict(spec)
    norm = kw.get("normalize")
    if norm is not None and not (
        isinstance(norm, Mapping)
        and all(isinstance(norm.get(k), list) and norm[k] and all(is_num(v) for v in norm[k]) for k in ("mean", "std"))
    ):
        raise StudyError(f"{where}: normalize must have mean and std lists of numbers, got {str(norm)[:80]!r}")
    paths = [("root", kw["root"])] if kw.get("root") is not None else []
    if not is_dataset_name(kw["name_or_path"]) or os.sep in kw["name_or_path"]:
        paths.append(("name_or_path", kw["name_or_path"]))
    for key, value in paths:
        if not isinstance(value, str) or not _inside(Path(value).expanduser(), run):
            raise StudyError(
                f"study {study!r} was run on data at {str(value)[:200]!r} ({key}), outside its run directory "
                f"{run or '(none: not an SQLite study)'}; a study file does not choose what hwtune reads: "
                "give the data again (--data / data=)"
            )
    _check_stored_val_data(kw, study, run)
    return kw


def _check_stored_val_data(kw: Mapping[str, Any], study: str, run: Path | None) -> None:
    """A stored held-out set is read again only when it is a dataset name or lies in the run directory."""
    from hwtune.data import is_dataset_name

    value = kw.get("val_data")
    if value is None:
        return
    if not isinstance(value, str) or not (
        (is_dataset_name(value) and os.sep not in value) or _inside(Path(value).expanduser(), run)
    ):
        raise StudyError(
            f"study {study!r} was validated on data at {str(value)[:200]!r} (val_data), outside its run directory "
            f"{run or '(none: not an SQLite study)'}; a study file does not choose what hwtune reads: "
            "give the validation data again (--val-data / val_data=)"
        )


# What of a study's stored data settings applies to data the user gives again: how it was split.
_SPLIT_KEYS = ("val_fraction", "seed", "train_limit", "val_limit", "test_limit", "image_size", "normalize")


def load_stored_data(
    spec: Any, *, study: str, run_dir: Path | None, data: Any = None, download: bool = False, val_data: Any = None
) -> DataSplits:
    """Reload the splits a study used, from its stored data settings, treated as untrusted input.

    Args:
        spec: The study's stored ``load_dataset`` settings (``StudyMeta.data["load"]``).
        study: The study's name (for messages).
        run_dir: The study's run directory (an SQLite file's directory), or None.
        data: The user's data given again: ``DataSplits`` (used as is), a name or directory, or a
            mapping of ``load_dataset`` arguments; the stored split settings (limits, seed, fractions)
            still apply, so the splits are the study's.
        download: Whether this command allows downloading a missing dataset (a stored
            ``download = true`` never does).
        val_data: The held-out validation data given again (a name or directory), for a study
            validated on one (``--val-data``) outside its run directory.

    Raises:
        StudyError: the stored settings are malformed, or name a path outside ``run_dir`` while
            ``data`` is not given.
    """
    from hwtune.data import DataSplits

    if isinstance(data, DataSplits):
        return data
    if data is not None:
        if not isinstance(data, (str, Path, Mapping)):
            raise ConfigError(
                f"data must be DataSplits, a dataset name or directory, or a mapping of load_dataset arguments, "
                f"got {type(data).__name__}"
            )
        given = dict(data) if isinstance(data, Mapping) else {"name_or_path": str(data)}
        if "name" in given:
            given["name_or_path"] = given.pop("name")
        base = {k: v for k, v in (spec.items() if isinstance(spec, Mapping) else ()) if k in _SPLIT_KEYS}
        kw = {**base, **given}
        if not kw.get("name_or_path"):  # only where it is (root=): the study's dataset, when it is a name
            from hwtune.data import is_dataset_name

            stored = spec.get("name_or_path") if isinstance(spec, Mapping) else None
            if isinstance(stored, str) and not (is_dataset_name(stored) and os.sep not in stored):
                raise StudyError(
                    f"study {study!r} was run on data at {stored[:200]!r}, not a dataset name: "
                    "give the data again (--data / data=), not only where it is (--data-root / root=)"
                )
            stored_name = stored if isinstance(stored, str) else None
            kw["name_or_path"] = stored_name or "fashion-mnist"
        kw["name_or_path"] = str(kw["name_or_path"])
        _check_spec_keys(kw, "data", ConfigError)
        stored_val = spec.get("val_data") if isinstance(spec, Mapping) else None
        if val_data is None and stored_val is not None and "val_data" not in given:
            _check_stored_val_data({"val_data": stored_val}, study, run_dir)
            kw["val_data"] = stored_val
    else:
        if spec is None:
            raise StudyError(f"study {study!r} was run on a user dataset hwtune cannot reload; pass data=")
        if val_data is not None and isinstance(spec, Mapping):  # given again: the stored one is not read
            spec = {k: v for k, v in spec.items() if k != "val_data"}
        kw = _stored_spec(spec, study, run_dir)
    if val_data is not None:
        kw["val_data"] = str(val_data)
    kw["download"] = bool(download)
    return load_data(kw)


def check_data_fits(space: SpaceLike, splits: DataSplits) -> None:
    """Raise one line naming both when the data's channels, size or classes differ from the space's input.

    Run before any trial (and before the study is created), so a mismatch costs no failed trials.

    Raises:
        DataError: ``data 'x' (3x32x32, 3 classes) does not fit recipe 'y' (1x28x28, 10 classes): ...``.
    """
    from hwtune.data import check_fits

    ch, size, classes = input_spec(space)
    kind = "model" if isinstance(space, UserModelSpace) else "recipe"
    check_fits(splits, (ch, size, size), classes, model=f"{kind} {getattr(space, 'name', space.family)!r}")


def _knob_label(v: Any) -> Any:
    """Optuna categorical choices must be None/bool/int/float/str: tuples become ``"8/16/32"``."""
    if isinstance(v, (list, tuple)):
        return "/".join(str(x) for x in v)
    return v


def distributions(space: SpaceLike) -> dict[str, tuple[list[Any], dict[Any, Any]]]:
    """Parameter name -> (Optuna categorical labels, label -> value) for every searched parameter."""
    out = {}
    for name, choices in space.param_choices().items():
        labels = [_knob_label(c) for c in choices]
        out[name] = (labels, dict(zip(labels, choices, strict=True)))
    return out


def sampler_params(space: SearchSpace, candidate: Any) -> dict[str, Any]:
    """``candidate``'s searched parameters as the sampler suggests them (their Optuna labels, :func:`distributions`):
    what ``study.enqueue_trial`` takes to evaluate it."""
    values = space.params_of(candidate)
    return {name: _knob_label(values[name]) for name in space.param_choices()}


def _numeric_size(v: Any) -> float:
    if isinstance(v, (list, tuple)):
        return float(sum(_numeric_size(x) for x in v))
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    return 0.0


def extreme_candidate(space: SpaceLike, *, largest: bool, precision: str) -> CandidateLike:
    """Every numeric parameter at its largest (or smallest) value; others at their first choice."""
    params: dict[str, Any] = {}
    for name, choices in space.knob_choices.items():
        if all(isinstance(c, (int, float, list, tuple)) and not isinstance(c, bool) for c in choices):
            params[name] = (max if largest else min)(choices, key=_numeric_size)
        else:
            params[name] = choices[0]
    params["precision"] = precision
    return space.candidate(params)


def stage_precision_of(cand: CandidateLike) -> dict[str, str]:
    """Stage -> precision of a candidate (a recipe's pairs or a derived space's mapping)."""
    sp = cand.stage_precision
    return dict(sp.items()) if isinstance(sp, Mapping) else dict(sp)


def candidate_seed(seed: int | None, key: str) -> int:
    # Stable across processes (hash() is salted): a retried candidate trains identically.
    return (int(seed or 0) * 1_000_003 + zlib.crc32(key.encode())) % (2**31 - 1)


def check_meta(stored: Mapping[str, Any], new: Mapping[str, Any], study_name: str) -> None:
    problems = []
    for key in ("objectives", "constraints", "budget"):
        old, cur = jsonable(stored.get(key)), jsonable(new.get(key))
        if old == cur:
            continue
        if isinstance(old, dict) and isinstance(cur, dict):
            for k in sorted(set(old) | set(cur)):
                if old.get(k) != cur.get(k):
                    problems.append(f"{key}.{k} {old.get(k)!r} (stored) != {cur.get(k)!r} (now)")
        else:
            problems.append(f"{key} {old} (stored) != {cur} (now)")
    if (stored.get("strategy") or "scratch") != (new.get("strategy") or "scratch"):
        problems.append(f"strategy {stored.get('strategy') or 'scratch'!r} (stored) != {new.get('strategy')!r} (now)")
    ids = [d.get("id") for d in stored.get("devices") or [stored.get("device", {})]]
    new_ids = [d.get("id") for d in new.get("devices") or [new.get("device", {})]]
    if len(ids) + len(new_ids) > 2 and ids != new_ids:
        problems.append(f"devices {ids} (stored) != {new_ids} (now)")
    elif stored.get("device", {}).get("id") != new.get("device", {}).get("id"):
        problems.append(f"device {stored.get('device', {}).get('id')!r} (stored) != {new['device']['id']!r} (now)")
    if jsonable(stored.get("recipe", {}).get("space")) != jsonable(new.get("recipe", {}).get("space")):
        problems.append(
            f"search space of recipe {stored.get('recipe', {}).get('name')!r} differs from {new['recipe']['name']!r}"
        )
    sd, nd = stored.get("data") or {}, new.get("data") or {}
    if sd.get("load") != nd.get("load") or sd.get("sizes") != nd.get("sizes"):
        problems.append(
            f"data {sd.get('load') or sd.get('sizes')} (stored) != {nd.get('load') or nd.get('sizes')} (now)"
        )
    if problems:
        raise StudyError(
            f"study {study_name!r} exists with different settings ({'; '.join(problems)}); "
            "use another --study name or the same settings to resume"
        )


# ---------------------------------------------------------------------------------------------
# tune()
# ---------------------------------------------------------------------------------------------


#: Parent of the run directories named after their study (``hwtune-runs/<study>``).
DEFAULT_RUNS_DIR = Path("hwtune-runs")


def check_study_name(name: Any) -> str:
    """``name`` if it is a safe study name (it names a directory), else one ``ConfigError`` line."""
    if not is_safe_name(name):
        raise ConfigError(f"study name must be a name of {SAFE_NAME_RULE}, got {str(name)[:120]!r}")
    return str(name)


def default_study_name(recipe_name: str, device_id: str) -> str:
    """``<recipe>-<device>``, made safe (it names the default run directory)."""
    return safe_name(f"{Path(str(recipe_name)).stem}-{device_id}", default="study")


def run_dir(study_name: str, out_dir: str | Path | None = None, *, parent: str | Path = DEFAULT_RUNS_DIR) -> Path:
    """The run directory (absolute): ``out_dir`` when the user names one, else ``parent/<study_name>``.

    A name-derived directory cannot leave ``parent``: the name is checked (no separators, no
    leading dot) and the result must lie directly inside ``parent``.

    Raises:
        ConfigError: an unsafe study name (when no ``out_dir`` is given).
    """
    if out_dir is not None:
        return Path(out_dir).expanduser().resolve()
    base = Path(parent).expanduser().resolve()
    out = base / check_study_name(study_name)
    if out.parent != base:  # pragma: no cover - a checked name is one plain component
        raise ConfigError(f"study name {study_name!r} would leave {base}")
    return out


def space_size(space: SpaceLike) -> str:
    try:
        return str(space.size())
    except Exception:  # noqa: BLE001
        return "?"
