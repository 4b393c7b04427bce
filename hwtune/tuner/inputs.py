"""What a search is over: the space (recipe), the data, and the Optuna parameters they become.

Also the study-settings check a resume runs (``check_meta``): a study is resumed only with the
settings it was created with.
"""

from __future__ import annotations

import contextlib
import tempfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune._util import jsonable
from hwtune.errors import ConfigError, StudyError

if TYPE_CHECKING:  # pragma: no cover
    from hwtune.data import DataSplits
    from hwtune.space import Candidate, SearchSpace

__all__ = [
    "candidate_seed",
    "check_meta",
    "data_spec",
    "default_study_name",
    "distributions",
    "extreme_candidate",
    "input_spec",
    "load_data",
    "resolve_space",
    "space_from_info",
    "space_size",
    "stage_precision_of",
]


def resolve_space(space_or_recipe: Any) -> tuple[SearchSpace, dict[str, Any]]:
    from hwtune.space import SearchSpace

    if hasattr(space_or_recipe, "cspace"):  # a user model's derived space (hwtune.compress)
        space = space_or_recipe
        return space, {"name": space.name, "path": None, "text": None, "space": space.to_dict()}
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
        text = Path(str(src)).read_text()
    info = {"name": str(name), "path": None if not src else str(src), "text": text, "space": _space_dict(space)}
    return space, info


def _space_dict(space: SearchSpace) -> dict[str, Any]:
    to_dict = getattr(space, "to_dict", None)
    if callable(to_dict):
        with contextlib.suppress(Exception):
            return jsonable(to_dict())
    return {
        "family": space.family,
        "knobs": {k: list(v) for k, v in space.knob_choices.items()},
        "precisions": list(space.precision_choices),
    }


def space_from_info(info: Mapping[str, Any]) -> SearchSpace:
    from hwtune.space import SearchSpace

    stored = info.get("space")
    if isinstance(stored, Mapping) and stored.get("kind") == "compress":
        from hwtune.tuner.compress import UserModelSpace

        return UserModelSpace.from_dict(stored)  # type: ignore[return-value]
    path = info.get("path")
    if path and Path(path).is_file():
        return SearchSpace.from_recipe(path)
    text = info.get("text")
    if text:
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / f"{Path(str(path or info.get('name') or 'recipe')).stem}.toml"
            p.write_text(text)
            return SearchSpace.from_recipe(p)
    return SearchSpace.from_recipe(info["name"])


def input_spec(space: SearchSpace) -> tuple[int, int, int]:
    """(channels, size, num_classes) of the space's input."""
    inp = space.input
    if isinstance(inp, Mapping):
        ch, size = int(inp["channels"]), int(inp["size"])
    elif hasattr(inp, "channels"):
        ch, size = int(inp.channels), int(inp.size)
    else:
        ch, size = int(inp[0]), int(inp[1])
    return ch, size, int(space.num_classes)


def data_spec(data: Any, space: SearchSpace) -> tuple[dict[str, Any] | None, Any]:
    """(reloadable load_dataset kwargs or None, DataSplits or None if not loaded yet)."""
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
        return kw, None
    raise ConfigError(
        f"data must be a dataset name, a mapping of load_dataset arguments or DataSplits, got {type(data).__name__}"
    )


def load_data(spec: Mapping[str, Any]) -> DataSplits:
    """``hwtune.data.load_dataset(**spec)`` (the spec stored with a study)."""
    from hwtune.data import load_dataset

    kw = dict(spec)
    name = kw.pop("name_or_path")
    normalize = kw.pop("normalize", None)  # the user's preprocessing (hwtune.compress normalize=)
    splits = load_dataset(name, **kw)
    if normalize:
        from hwtune.tuner.compress import with_normalization

        splits = with_normalization(splits, normalize["mean"], normalize["std"])
    return splits


def _knob_label(v: Any) -> Any:
    """Optuna categorical choices must be None/bool/int/float/str: tuples become ``"8/16/32"``."""
    if isinstance(v, (list, tuple)):
        return "/".join(str(x) for x in v)
    return v


def distributions(space: SearchSpace) -> dict[str, tuple[list[Any], dict[Any, Any]]]:
    """Parameter name -> (Optuna categorical labels, label -> value) for every searched parameter."""
    out = {}
    for name, choices in space.param_choices().items():
        labels = [_knob_label(c) for c in choices]
        out[name] = (labels, dict(zip(labels, choices, strict=True)))
    return out


def _numeric_size(v: Any) -> float:
    if isinstance(v, (list, tuple)):
        return float(sum(_numeric_size(x) for x in v))
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    return 0.0


def extreme_candidate(space: SearchSpace, *, largest: bool, precision: str) -> Candidate:
    """Every numeric parameter at its largest (or smallest) value; others at their first choice."""
    params: dict[str, Any] = {}
    for name, choices in space.knob_choices.items():
        if all(isinstance(c, (int, float, list, tuple)) and not isinstance(c, bool) for c in choices):
            params[name] = (max if largest else min)(choices, key=_numeric_size)
        else:
            params[name] = choices[0]
    params["precision"] = precision
    return space.candidate(params)


def stage_precision_of(cand: Any) -> dict[str, str]:
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


def default_study_name(recipe_name: str, device_id: str) -> str:
    return f"{Path(recipe_name).stem}-{device_id}"


def space_size(space: SearchSpace) -> str:
    try:
        return str(space.size())
    except Exception:  # noqa: BLE001
        return "?"
