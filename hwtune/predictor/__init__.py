"""Latency prediction for devices you do not have, with its error bars.

``predict`` lowers the model to the layers a runtime runs -- from its module structure, without
tracing (``_structure.py``; a module the structural lowering does not cover is traced once per
structure with ``hwtune.graph.trace_layers``; ``_model_features.py``) -- and evaluates the
profile's latency model (``_prediction.py``) as its stored calibration says
(``_stored_calibration.py``):

* a profile calibrated from a few whole-network measurements (``hwtune calibrate --networks``)
  holds the latency direction of the reference device (``_prior.py``: learned across 25 measured
  device settings) that beat FLOPs leave-one-out on those rows, refitted to them -- or the
  FLOPs-proportional form when none did (``_forms.py`` holds the forms); ``hwtune calibrate
  --suggest N`` says which networks to measure (``_suggest.py``);
* a profile calibrated from micro-benchmarks holds the per-op roofline (``_model.py``);
* a spec-only profile holds the mean CPU/phone direction of the prior priced at its datasheet
  peak, and states its rank correlation and error measured leave-device-out.

Every number comes with the profile's stated error, its rank correlation and FLOPs' rank
correlation on the same rows (:func:`predict_latency_detail` returns a :class:`LatencyPrediction`);
a profile without any calibration gets the uncalibrated roofline, labelled
``estimated (roofline, uncalibrated)``.

Example:
    >>> import hwtune
    >>> model = hwtune.create_model("nb201", {"arch": "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"}, num_classes=10, in_channels=3, input_size=32)
    >>> ms = hwtune.predict_latency(model, (1, 3, 32, 32), device="raspberry-pi-4", precision="fp32")
    >>> ms > 0
    True
"""

from __future__ import annotations

from hwtune.predictor._calibration import (
    CalibrationReport,
    calibrate_microbench,
    calibrate_networks,
    calibrate_spec,
)
from hwtune.predictor._model_features import model_features, structure_key
from hwtune.predictor._prediction import (
    LatencyPrediction,
    LayerPrediction,
    PredictedMilliseconds,
    Prediction,
    predict,
    predict_features,
    predict_latency,
    predict_latency_detail,
    profile_coefficients,
)
from hwtune.predictor._prior import DevicePrior, load_prior
from hwtune.predictor._stored_calibration import UNCALIBRATED_LABEL
from hwtune.predictor._suggest import Suggestion, suggest_networks

__all__ = [
    "UNCALIBRATED_LABEL",
    "CalibrationReport",
    "DevicePrior",
    "LatencyPrediction",
    "LayerPrediction",
    "PredictedMilliseconds",
    "Prediction",
    "Suggestion",
    "calibrate_microbench",
    "calibrate_networks",
    "calibrate_spec",
    "load_prior",
    "model_features",
    "predict",
    "predict_features",
    "predict_latency",
    "predict_latency_detail",
    "profile_coefficients",
    "structure_key",
    "suggest_networks",
]
