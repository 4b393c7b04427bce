"""``hwtune calibrate --suggest N``: which networks to measure so that ten rows say the most.

A calibration from few networks decides two things (``_prior.choose_with_prior``): which
reference device's latency direction this device follows (or FLOPs), and its scale and
intercept. Random networks often cannot tell the directions apart (NAS-Bench-201 networks of
similar size look alike to every model). The suggestion draws a pool of candidates from a
recipe's search space, predicts each with every candidate direction (log milliseconds), and
picks ``N`` networks greedily by D-optimality on the principal components of those predictions:
the networks on which the directions disagree most, spread over the size range.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwtune.errors import ConfigError
from hwtune.predictor._features import NO_LOWERING, Lowering
from hwtune.predictor._forms import base_vector
from hwtune.predictor._model import Hardware
from hwtune.predictor._model_features import model_features
from hwtune.predictor._prior import DevicePrior, flops_column, load_prior
from hwtune.predictor._stored_calibration import profile_calibration

if TYPE_CHECKING:
    from hwtune.device import DeviceProfile
    from hwtune.space import Candidate, SearchSpace

__all__ = ["DEFAULT_POOL", "DEFAULT_RECIPE", "Suggestion", "suggest_networks"]

DEFAULT_RECIPE = "cifar-nb201"
DEFAULT_POOL = 256
TEMPLATE_COLUMNS = ("name", "family", "knobs", "batch_size", "input_shape", "precision", "latency_ms")


@dataclass(frozen=True)
class Suggestion:
    """Networks to measure, in the order chosen (most informative first).

    Attributes:
        candidates: The chosen candidates.
        names: A row name per candidate.
        input_shape: CHW input of the recipe.
        recipe: The recipe they were drawn from.
        pool: How many candidates the choice was made from.
    """

    candidates: tuple[Candidate, ...]
    names: tuple[str, ...]
    input_shape: tuple[int, int, int]
    recipe: str
    pool: int

    def rows(self) -> list[dict[str, Any]]:
        """CSV rows of the template (``latency_ms`` empty: measure and fill it)."""
        out = []
        for name, c in zip(self.names, self.candidates):
            knobs = {k: list(v) if isinstance(v, tuple) else v for k, v in c.knob_dict.items()}
            out.append({"name": name, "family": c.family, "knobs": json.dumps(knobs, separators=(",", ":")),
                        "batch_size": 1, "input_shape": "x".join(map(str, self.input_shape)),
                        "precision": c.precision, "latency_ms": ""})
        return out

    def csv_text(self) -> str:
        """The CSV template ``hwtune calibrate --networks`` reads once ``latency_ms`` is filled."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=TEMPLATE_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(self.rows())
        return buf.getvalue()


def _connected(candidate: Candidate) -> bool:
    """False for a NAS-Bench-201 cell whose output does not depend on its input (a runtime folds the
    whole network to a constant: its latency says nothing about the others)."""
    if candidate.family != "nb201":
        return True
    from hwtune.families.nb201 import cell_connected  # torch: imported when a candidate is nb201

    return cell_connected(str(candidate.knob_dict.get("arch")))


def _pool(space: SearchSpace, size: int, seed: int, precision: str) -> list[Candidate]:
    import numpy as np

    rng = np.random.default_rng(seed)
    seen: dict[str, Candidate] = {}
    tries = 0
    while len(seen) < size and tries < size * 20:
        tries += 1
        c = space.sample(rng)
        if c.precision != precision:
            c = space.candidate({**space.params_of(c), "precision": precision})
        if c.key not in seen and _connected(c):
            seen[c.key] = c
    return list(seen.values())


def _greedy_d_optimal(scores: Any, n: int) -> list[int]:
    """Rows of ``scores`` chosen one at a time, each maximising its leverage ``u' A^-1 u``."""
    import numpy as np

    a = np.eye(scores.shape[1]) * 1e-3 * float(np.mean(np.sum(scores**2, 1)) or 1.0)
    chosen: list[int] = []
    for _ in range(n):
        inv = np.linalg.inv(a)
        lev = np.einsum("ij,jk,ik->i", scores, inv, scores)
        lev[chosen] = -np.inf
        i = int(np.argmax(lev))
        chosen.append(i)
        a += np.outer(scores[i], scores[i])
    return chosen


def suggest_networks(
    n: int,
    *,
    recipe: str | Path = DEFAULT_RECIPE,
    base_profile: str | Path | DeviceProfile = "host",
    prior: DevicePrior | str | Path | bool = True,
    pool: int = DEFAULT_POOL,
    seed: int = 0,
    precision: str | None = None,
) -> Suggestion:
    """The ``n`` networks of ``recipe`` whose measurements inform a calibration most.

    Args:
        n: How many networks (3 or more; 10 is the intended size).
        recipe: Recipe name or path (its search space is the pool).
        base_profile: The profile to be calibrated (its lowering and hardware numbers).
        prior: The device prior (``True``: shipped), a path, or ``False`` (FLOPs spread alone).
        pool: Candidates drawn from the space to choose from.
        seed: Seed of the pool draw.
        precision: Precision to measure at (default: the recipe's first choice).

    Raises:
        ConfigError: ``n`` is below 3 or above the pool.
    """
    import numpy as np

    from hwtune.device import load_profile
    from hwtune.space import SearchSpace

    if n < 3:
        raise ConfigError(f"--suggest needs at least 3 networks (forms are checked leave-one-out), got {n}")
    if pool < n:
        raise ConfigError(f"the pool ({pool}) must hold at least the {n} networks to suggest")
    space = SearchSpace.from_recipe(recipe)
    prec = precision or space.precision_choices[0]
    profile = load_profile(base_profile)
    hw = Hardware.from_profile(profile)
    cal = profile_calibration(profile)
    deployed = cal.lowering if cal.method == "microbench" else NO_LOWERING
    cands = _pool(space, pool, seed, prec)
    if len(cands) < n:
        raise ConfigError(f"recipe {space.name!r} offers only {len(cands)} distinct usable networks, fewer than {n}")
    shape = (1, *space.input_shape)
    vec: dict[str, list[list[float]]] = {"deployed": [], "eager": []}
    for c in cands:
        model = space.build(c)
        for ex, low in (("deployed", deployed), ("eager", Lowering(eager=True))):
            vec[ex].append(base_vector(model_features(model, shape, prec, lowering=low)[0], hw))
    vectors = {k: np.asarray(v, float) for k, v in vec.items()}
    columns = [flops_column(vectors["eager"])]
    if prior is not False:
        dp = prior if isinstance(prior, DevicePrior) else load_prior(None if prior is True else prior)
        for ref in dp.devices:
            columns.append(vectors[ref.executes] @ np.asarray(ref.base_theta(hw)))
    logp = np.log(np.maximum(np.stack(columns, 1), 1e-12))
    logp -= logp.mean(0)
    u, s, _ = np.linalg.svd(logp, full_matrices=False)
    r = max(1, min(n - 1, int(np.sum(s > 1e-9 * s[0]))))
    picked = _greedy_d_optimal(u[:, :r] * s[:r], n)
    chosen = tuple(cands[i] for i in picked)
    names = tuple(f"suggest-{i + 1:02d}" for i in range(len(chosen)))
    return Suggestion(chosen, names, space.input_shape, str(space.name), len(cands))


def suggestion_lines(sug: Suggestion, columns: Sequence[str] = ("name", "knobs")) -> list[str]:
    """Human lines: what to measure and how."""
    lines = [(f"measure these {len(sug.candidates)} networks (chosen from {sug.pool} of recipe {sug.recipe}; "
              f"input 1x{'x'.join(map(str, sug.input_shape))}, batch 1), then fill latency_ms and run "
              "hwtune calibrate --networks FILE --base ... --out ...:")]
    for row in sug.rows():
        lines.append("  " + "  ".join(str(row[c]) for c in columns))
    return lines
