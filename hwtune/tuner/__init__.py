"""The tuner: a multi-objective Optuna study over a search space, for a device.

Modules, in the order a search uses them (imports flow down this list only):

* :mod:`~hwtune.tuner.config` -- :class:`Constraints`, the training :class:`Schedule` and the weight :class:`Strategy`.
* :mod:`~hwtune.tuner.inputs` -- the space (recipe), the data, the Optuna parameters, settings checks.
* :mod:`~hwtune.tuner.storage` -- Optuna storages, typed study records, resume, worker liveness.
* :mod:`~hwtune.tuner.samplers` -- sampler registry (or any ``optuna.samplers.BaseSampler``).
* :mod:`~hwtune.tuner.pipeline` -- :class:`CandidatePipeline`: build, plan, train, ship, measure, evaluate.
* :mod:`~hwtune.tuner.constraints`, :mod:`~hwtune.tuner.reference` -- hard limits and the HV reference.
* :mod:`~hwtune.tuner.context`, :mod:`~hwtune.tuner.halving`, :mod:`~hwtune.tuner.objective`,
  :mod:`~hwtune.tuner.loop` -- one trial, successive halving and the run loop.
* :mod:`~hwtune.tuner.artifacts`, :mod:`~hwtune.tuner.workers` -- the study's artifact store (a
  directory or ``s3://``), local worker processes and the study lock.
* :mod:`~hwtune.tuner.inherit`, :mod:`~hwtune.tuner.compress`, :mod:`~hwtune.tuner.finalize` -- weight
  inheritance, a user's model as a study, training the chosen trials to convergence.
* :mod:`~hwtune.tuner.api` -- :func:`tune`, :func:`join_study`.

Optuna is imported lazily (inside functions), so importing this package stays fast.
"""

from hwtune.front import TuneResult
from hwtune.tuner.api import join_study, tune
from hwtune.tuner.config import DEFAULT_N_TRIALS, STRATEGIES, Constraints, Schedule, Strategy
from hwtune.tuner.constraints import constraint_values
from hwtune.tuner.inputs import load_data
from hwtune.tuner.pipeline import CandidatePipeline, ship_runtime_name
from hwtune.tuner.reference import reference_point_for
from hwtune.tuner.samplers import SAMPLERS, register_sampler
from hwtune.tuner.storage import download_weights, load_result, open_storage, sha256_file

__all__ = [
    "DEFAULT_N_TRIALS",
    "SAMPLERS",
    "STRATEGIES",
    "CandidatePipeline",
    "Constraints",
    "Schedule",
    "Strategy",
    "TuneResult",
    "constraint_values",
    "download_weights",
    "join_study",
    "load_data",
    "load_result",
    "open_storage",
    "reference_point_for",
    "register_sampler",
    "sha256_file",
    "ship_runtime_name",
    "tune",
]
