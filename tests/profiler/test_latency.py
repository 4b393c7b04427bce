"""hwtune.profiler.latency (over hwtune.runtimes): the median CI, measurement structure, ORT vs torch
agreement, per-op attribution."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from hwtune.errors import ConfigError, ModelError
from hwtune.graph import trace_layers
from hwtune.onnx_export import export_onnx, onnx_node_module
from hwtune.profiler.latency import measure_latency
from hwtune.runtimes import LatencyMeasurement, median_ci
from hwtune.runtimes._timing import _binom_cdf
from hwtune.runtimes.onnxruntime import attribute_op_times, ort_session, profile_ort_ops


def test_binomial_cdf_exact_small_case() -> None:
    assert _binom_cdf(0, 4) == pytest.approx(1 / 16)
    assert _binom_cdf(1, 4) == pytest.approx(5 / 16)
    assert _binom_cdf(4, 4) == 1.0
    assert _binom_cdf(-1, 4) == 0.0


def test_median_ci_order_statistics() -> None:
    # n=10: P(B<=1) = 11/1024 = 0.0107 <= 0.025 < P(B<=2) = 0.0547, so j=2: [x_(2), x_(9)].
    xs = [float(i) for i in range(1, 11)]
    med, lo, hi = median_ci(xs)
    assert (med, lo, hi) == (5.5, 2.0, 9.0)
    assert median_ci([1.0, 2.0, 3.0, 4.0, 5.0])[1] == -math.inf  # n=5 is too few for 95%


def test_median_ci_covers_true_median_about_95_percent() -> None:
    rng = random.Random(0)
    hits = 0
    trials = 400
    for _ in range(trials):
        xs = [rng.expovariate(1.0) for _ in range(41)]
        _, lo, hi = median_ci(xs)
        hits += lo <= math.log(2) <= hi
    assert 0.92 <= hits / trials <= 0.995  # distribution-free: holds for this skewed distribution too


def test_median_ci_large_n_uses_normal_approximation() -> None:
    xs = list(range(5001))
    med, lo, hi = median_ci(xs)
    assert med == 2500 and lo < med < hi
    assert (hi - lo) / 2 == pytest.approx(1.96 * math.sqrt(5001) / 2, rel=0.05)


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_measure_latency_structure(runtime: str, tiny_model: torch.nn.Module, tiny_input: torch.Tensor) -> None:
    m = measure_latency(tiny_model, tiny_input, runtime=runtime, threads=1, time_budget_s=0.5, min_runs=10)
    assert m.source == "measured" and m.runtime == runtime and m.threads == 1
    assert m.runs >= 3
    assert 0 < m.min_ms <= m.p10_ms <= m.median_ms <= m.p90_ms
    assert m.ci_half_width_ms >= 0
    assert m.converged == (m.ci_pct <= m.target_ci_pct)
    assert m.label.startswith(f"measured on {runtime} (1 thread)")
    assert torch.get_num_threads() >= 1
    back = LatencyMeasurement.from_dict(m.to_dict())
    assert back == m


def test_measure_latency_restores_threads(tiny_model: torch.nn.Module, tiny_input: torch.Tensor) -> None:
    before = torch.get_num_threads()
    measure_latency(tiny_model, tiny_input, runtime="torch", threads=1, time_budget_s=0.1)
    assert torch.get_num_threads() == before


def test_ort_output_equals_torch_output(tmp_path, tiny_model: torch.nn.Module, tiny_input: torch.Tensor) -> None:
    path = export_onnx(tiny_model, tiny_input, tmp_path / "tiny.onnx")
    session = ort_session(path, threads=1)
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))  # dynamic batch
    (ort_out,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        ref = tiny_model(x).numpy()
    np.testing.assert_allclose(ort_out, ref, rtol=1e-4, atol=1e-5)


def test_bad_arguments(tmp_path, tiny_model: torch.nn.Module, tiny_input: torch.Tensor) -> None:
    with pytest.raises(ConfigError, match="did you mean 'onnxruntime'"):
        measure_latency(tiny_model, tiny_input, runtime="onnxruntim")
    with pytest.raises(ConfigError, match="threads"):
        measure_latency(tiny_model, tiny_input, runtime="torch", threads=0)
    with pytest.raises(ConfigError, match="cannot run an ONNX file"):
        measure_latency(tmp_path / "x.onnx", tiny_input, runtime="torch")
    with pytest.raises(ModelError, match="not found"):
        measure_latency(tmp_path / "missing.onnx", tiny_input, runtime="onnxruntime")
    path = export_onnx(tiny_model, tiny_input, tmp_path / "tiny.onnx")
    with pytest.raises(ModelError, match=r"expects shape Nx1x28x28, got 1x3x28x28"):
        measure_latency(path, torch.randn(1, 3, 28, 28), runtime="onnxruntime", time_budget_s=0.1)
    with pytest.raises(ModelError, match="expects 1 input channels, got 3"):
        measure_latency(tiny_model, torch.randn(1, 3, 28, 28), runtime="torch", time_budget_s=0.1)


def test_onnx_node_module_paths() -> None:
    assert onnx_node_module("/features/features.1/conv/conv.0/conv.0.2/Clip_output_0_nchwc") == "features.1.conv.0.2"
    assert onnx_node_module("/stem/stem.0/Conv") == "stem.0"
    assert onnx_node_module("/classifier/classifier.1/Gemm") == "classifier.1"
    assert onnx_node_module("/Flatten") == ""
    assert onnx_node_module("ReorderOutput") == ""


def test_per_op_times_map_to_layers(tmp_path, tiny_model: torch.nn.Module, tiny_input: torch.Tensor) -> None:
    path = export_onnx(tiny_model, tiny_input, tmp_path / "tiny.onnx")
    ops = profile_ort_ops(path, tiny_input, threads=1, runs=5)
    assert ops and all(op.median_ms >= 0 and op.runs == 5 for op in ops)
    graph = trace_layers(tiny_model, tiny_input)
    times, unattributed = attribute_op_times(graph.layers, ops)
    # Both convs (with their fused bn+relu) and the linear head get measured times.
    assert {"stem.0", "body.0", "head"} <= set(times)
    assert unattributed >= 0
    assert sum(times.values()) + unattributed == pytest.approx(sum(op.median_ms for op in ops))
    fused = {layer.name for layer in graph.layers if layer.fused_into}
    assert not fused & set(times)  # fused layers hand their time to their conv


def test_timing_settings_travel_as_one_object(tiny_model, tiny_input) -> None:
    """profile_model and measure_latency take a TimingBudget; the flat keywords replace its fields."""
    from hwtune.profiler import TimingBudget, profile_model

    timing = TimingBudget(time_budget_s=0.2, target_ci_pct=7.0, min_runs=5)
    r = profile_model(tiny_model, tiny_input, device="host", runtime="torch", layers=False, timing=timing)
    assert r.latency_source == "measured" and r.latency.target_ci_pct == 7.0
    r = profile_model(tiny_model, tiny_input, device="host", runtime="torch", layers=False, timing=timing,
                      target_ci_pct=9.0)
    assert r.latency.target_ci_pct == 9.0
    m = measure_latency(tiny_model, tiny_input, runtime="torch", timing=timing, target_ci_pct=8.0)
    assert m.target_ci_pct == 8.0 and m.runs >= 3
