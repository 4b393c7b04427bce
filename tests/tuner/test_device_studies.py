"""End to end for the devices that deploy beyond ONNX: ``pixel-3`` (LiteRT) and ``stm32h743`` (TFLite Micro).

For each device a tiny real study (the real ``CandidatePipeline``: 2 int8 trials of a 4-16 channel
convnet, one epoch on 8,000 Fashion-MNIST images), then ``hwtune export`` of the knee with the
device's default format, then the exported file loaded the way a user deploys it -- ai-edge-litert's
``Interpreter``, or tflite-micro's Python interpreter given exactly the manifest's arena -- fed raw
t10k pixels normalized as the manifest says, and compared with the torch model and with the
manifest's accuracy. Neither device can be timed here (no phone, no Cortex-M7), so their latency
must be labelled predicted/estimated with its held-out error, never measured.

Skipped without the ``litert`` extra (``pip install 'hwtune[litert]'``; the ``.pte`` test also needs
``'hwtune[executorch]'``); CI installs both.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import tiny_recipe, write_recipe

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
DEVICES = ("pixel-3", "stm32h743")
LITERT_MODULES = ("litert_torch", "ai_edge_litert", "ai_edge_quantizer")
EXTRA_MODULES = {"pixel-3": LITERT_MODULES, "stm32h743": (*LITERT_MODULES, "tflite_micro")}
TEST_LIMIT = 300  # the manifest's test accuracy is over the first 300 t10k images: the ones re-run here

# int8 only: the MCU ships int8 and the phone's int8 file is the one worth checking (fully int8 kernels).
RECIPE = tiny_recipe(precisions=["int8"], batch_size=32)
DATA = {"name": "fashion-mnist", "train_limit": 8000, "val_limit": 300, "test_limit": TEST_LIMIT}
BUDGET = {"epochs": 1.0, "rungs": [1.0], "batch_size": 32, "latency_budget_s": 0.05, "calibration_samples": 64}

pytestmark = [pytest.mark.extras, pytest.mark.slow]


@dataclass(frozen=True)
class Deployment:
    """One device's study, its exported knee and what ``hwtune export`` printed."""

    device: Any  # DeviceProfile
    result: Any  # TuneResult
    run_dir: Path
    export_dir: Path
    manifest: dict[str, Any]
    cli_output: str

    @property
    def model_file(self) -> Path:
        return self.export_dir / self.manifest["model_file"]


def _need(device_id: str) -> None:
    for module in EXTRA_MODULES[device_id]:
        pytest.importorskip(module)
    if not all((FASHION_DIR / f"{part}-images-idx3-ubyte.gz").exists() for part in ("train", "t10k")):
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


def _cli(*args: str) -> str:
    """Run ``hwtune ARGS`` in this process; its stdout (a non-zero exit fails the test with stderr)."""
    from hwtune.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    assert code == 0, f"hwtune {' '.join(args)} exited {code}: {err.getvalue()[-2000:]}"
    return out.getvalue()


def _deploy(device_id: str, base: Path) -> Deployment:
    """Run the tiny study for ``device_id`` in ``base`` and export its knee with ``hwtune export``."""
    import json

    import hwtune

    recipe = write_recipe(base, "tiny-int8-convnet.toml", RECIPE)
    run_dir, export_dir = base / "run", base / "export"
    result = hwtune.tune(
        recipe,
        device=device_id,
        data=DATA,
        n_trials=2,
        out_dir=run_dir,
        study_name="e2e",
        sampler="random",
        seed=5,
        budget=BUDGET,
        strategy="scratch",
        progress=False,
        reports=False,
    )
    printed = _cli("export", str(run_dir), "--trial", "knee", "-o", str(export_dir))
    manifest = json.loads((export_dir / "manifest.json").read_text())
    return Deployment(hwtune.load_profile(device_id), result, run_dir, export_dir, manifest, printed)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """``deployed(device_id)``: the device's study and exported knee, made once per module (a failure too)."""
    cache: dict[str, Deployment | str] = {}

    def get(device_id: str) -> Deployment:
        _need(device_id)
        if device_id not in cache:
            try:
                cache[device_id] = _deploy(device_id, tmp_path_factory.mktemp(f"study-{device_id}"))
            except BaseException as exc:  # the other tests of this device fail at once instead of re-running it
                cache[device_id] = f"{type(exc).__name__}: {exc}"
                raise
        hit = cache[device_id]
        if isinstance(hit, str):
            pytest.fail(f"the {device_id} study or its export failed earlier: {hit[:500]}")
        return hit

    return get


# ---- helpers: what a user does on the device side ----------------------------------------------------


def _t10k(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` t10k images (uint8, N x 1 x 28 x 28) and labels, read from the IDX files directly."""
    with gzip.open(FASHION_DIR / "t10k-images-idx3-ubyte.gz") as fh:
        images = np.frombuffer(fh.read(), dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28)[:n]
    with gzip.open(FASHION_DIR / "t10k-labels-idx1-ubyte.gz") as fh:
        labels = np.frombuffer(fh.read(), dtype=np.uint8, offset=8)[:n]
    return images, labels.astype(np.int64)


def _normalized(pixels: np.ndarray, manifest: dict[str, Any]) -> np.ndarray:
    """``x = (pixel / 255 - mean) / std`` with the manifest's input spec."""
    spec = manifest["input"]
    mean = np.asarray(spec["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(spec["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    return ((pixels.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)


def _quantize(x: np.ndarray, scale: float, zero: int, dtype: Any) -> np.ndarray:
    if np.dtype(dtype).kind == "f":
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)


def _dequantize(q: np.ndarray, scale: float, zero: int) -> np.ndarray:
    if q.dtype.kind == "f":
        return q.astype(np.float32)
    return (q.astype(np.float32) - zero) * scale


def _input_spec(details: dict[str, Any], scale: float, zero: int) -> dict[str, Any]:
    """The file's input as the manifest should describe it."""
    return {
        "dtype": np.dtype(details["dtype"]).name,
        "shape": [int(d) for d in details["shape"]],
        "scale": scale,
        "zero_point": zero,
    }


def _run_litert(path: Path, x: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Logits of every sample through ai-edge-litert's interpreter, fed one by one like on the phone."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    (in_scale, in_zero), (out_scale, out_zero) = inp["quantization"], out["quantization"]
    logits = []
    for sample in x:
        it.set_tensor(inp["index"], _quantize(sample[None], in_scale, in_zero, inp["dtype"]))
        it.invoke()
        logits.append(_dequantize(it.get_tensor(out["index"]), out_scale, out_zero)[0])
    return np.stack(logits), _input_spec(inp, in_scale, in_zero)


def _tflm_interpreter(path: Path, arena_bytes: int) -> Any:
    from tflite_micro.python.tflite_micro import runtime as tflm

    return tflm.Interpreter.from_file(str(path), arena_size=int(arena_bytes))


def _run_tflm(path: Path, x: np.ndarray, arena_bytes: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Logits through TFLite Micro's interpreter (reference kernels) with exactly ``arena_bytes`` of arena."""
    it = _tflm_interpreter(path, arena_bytes)
    inp, out = it.get_input_details(0), it.get_output_details(0)
    in_q, out_q = inp["quantization_parameters"], out["quantization_parameters"]
    in_scale, in_zero = float(in_q["scales"][0]), int(in_q["zero_points"][0])
    out_scale, out_zero = float(out_q["scales"][0]), int(out_q["zero_points"][0])
    logits = []
    for sample in x:
        it.set_input(_quantize(sample[None], in_scale, in_zero, inp["dtype"]), 0)
        it.invoke()
        logits.append(_dequantize(it.get_output(0), out_scale, out_zero)[0])
    return np.stack(logits), _input_spec(inp, in_scale, in_zero)


def _torch_knee(dep: Deployment) -> Any:
    """The knee's trained torch model, rebuilt from its candidate and stored weights."""
    import torch

    import hwtune
    from hwtune.tuner import download_weights

    knee = dep.result.knee
    model = hwtune.create_model(
        "convnet", hwtune.Candidate.from_dict(knee.candidate), num_classes=10, in_channels=1, input_size=28
    )
    blob = torch.load(
        download_weights(dep.result, knee.number, dep.export_dir.parent / "knee.pt"),
        map_location="cpu",
        weights_only=True,
    )
    model.load_state_dict(blob["state_dict"])
    return model.eval()


def _torch_logits(model: Any, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _check_like_torch(got: np.ndarray, want: np.ndarray) -> None:
    """int8 logits follow the fp32 model: same top-1 on nearly every image, small error against the logit range."""
    agree = float((got.argmax(1) == want.argmax(1)).mean())
    assert agree >= 0.9, f"top-1 agrees with torch on only {agree:.0%} of the images"
    spread = float(want.max() - want.min())
    err = float(np.abs(got - want).mean())
    assert err <= 0.02 * spread, f"mean |int8 - fp32| logit error {err:.4f} vs logit range {spread:.3f}"


def _states_error(text: str, error_pct: float) -> bool:
    """Whether ``text`` gives the held-out error (``±6%``, ``median error 79.0%``), rounded or not."""
    return any(abs(float(v) - error_pct) < 1.0 for v in re.findall(r"(\d+(?:\.\d+)?)%", text))


# ---- the study and the export --------------------------------------------------------------------------


@pytest.mark.parametrize("device_id", DEVICES)
def test_study_ships_and_scores_on_the_device_runtime(deployed, device_id):
    dep = deployed(device_id)
    runtime = dep.device.runtime
    assert dep.result.counts()["failed"] == 0 and dep.result.knee is not None
    for t in dep.result.trials:
        if t.trained and t.duplicate_of is None:
            f = t.figures
            assert f["runtime"] == runtime and f["accuracy_source"] == f"{runtime} (shipped file)"
            assert f["latency_source"] != "measured"
            assert 0.2 < f["val_accuracy"] <= 1.0  # trained: far above the 10% of chance


@pytest.mark.parametrize("device_id", DEVICES)
def test_default_export_is_the_device_runtime_file(deployed, device_id):
    dep = deployed(device_id)
    m, runtime = dep.manifest, dep.device.runtime
    assert sorted(p.name for p in dep.export_dir.iterdir()) == ["manifest.json", "model.tflite"]
    content = dep.model_file.read_bytes()
    assert content[4:8] == b"TFL3"  # the TFLite flatbuffer identifier
    assert m["format"] == "tflite" and m["runtime"] == runtime and m["device"]["runtime"] == runtime
    assert m["device"]["id"] == device_id and m["evaluation"]["runtime"] == runtime
    assert m["precision"] == m["precision_label"] == "int8"
    assert m["quantization"]["float_ops"] == [], "an op left in float in the int8 file"
    assert m["sha256"] == hashlib.sha256(content).hexdigest() and m["file_bytes"] == len(content)
    assert m["study"]["trial"] == dep.result.knee.number
    assert abs(m["val_accuracy"] - m["recorded_val_accuracy"]) <= 0.01
    wanted = {"ai-edge-litert"} | ({"tflite_micro", "tflite-micro"} if runtime == "tflite-micro" else set())
    assert {k.replace("_", "-") for k in m["versions"]} >= {w.replace("_", "-") for w in wanted}, m["versions"]


@pytest.mark.parametrize("device_id", DEVICES)
def test_latency_is_predicted_with_its_error_never_measured(deployed, device_id, tmp_path):
    from hwtune.report import write_reports

    dep = deployed(device_id)
    lat = dep.manifest["latency"]
    error_pct = float(dep.device.calibration["error_pct"])
    assert lat["source"] in ("predicted", "estimated") and lat["latency_ms"] > 0
    label = lat["label"]
    assert "measured" not in label
    assert _states_error(label, error_pct), f"held-out error {error_pct}% not in {label!r}"
    assert lat["runs"] is None and lat["p10_ms"] is None and lat["ci_half_width_ms"] is None
    calibrated = dep.device.calibration.get("precisions")
    if calibrated and dep.manifest["precision"] not in calibrated:  # e.g. Pixel 3: fp32 TFLite timings only
        assert "extrapolated" in label, f"{dep.manifest['precision']} latency from an fp32 calibration: {label!r}"
    assert f"({lat['source']}, {lat['runtime']})" in dep.cli_output and "measured" not in dep.cli_output
    report = write_reports(dep.result, tmp_path, plots=False)["report"].read_text()
    knee_line = next(line for line in report.splitlines() if line.startswith("Knee"))
    assert f"({lat['source']}" in knee_line and "measured" not in knee_line
    assert _states_error(knee_line, error_pct), f"the report's knee states no error: {knee_line!r}"


# ---- the exported file on the device's runtime -----------------------------------------------------------


@pytest.mark.parametrize("device_id", DEVICES)
def test_exported_file_runs_in_its_runtime_like_torch_and_the_manifest(deployed, device_id):
    dep = deployed(device_id)
    m = dep.manifest
    pixels, labels = _t10k(TEST_LIMIT)
    x = _normalized(pixels, m)
    if dep.device.kind == "mcu":
        got, io_spec = _run_tflm(dep.model_file, x, m["memory"]["working_memory_bytes"])
    else:
        got, io_spec = _run_litert(dep.model_file, x)
    # The manifest describes the file's real input: a deployer quantizes with these numbers.
    assert m["input"]["dtype"] == io_spec["dtype"] == "int8"
    assert m["input"]["scale"] == pytest.approx(io_spec["scale"], rel=1e-6)
    assert m["input"]["zero_point"] == io_spec["zero_point"]
    assert m["input"]["shape"] == io_spec["shape"] and "dynamic" not in m["input"]["batch"]
    accuracy = float((got.argmax(1) == labels).mean())
    assert m["evaluation"]["test_samples"] == TEST_LIMIT
    # Same images; only the manifest's rounded mean/std can move an input by one quantization step.
    assert abs(accuracy - m["test_accuracy"]) <= 0.01, (accuracy, m["test_accuracy"])
    _check_like_torch(got, _torch_logits(_torch_knee(dep), x))


def test_mcu_manifest_memory_is_the_measured_arena_and_fits_the_sram(deployed):
    from hwtune.runtimes import get_runtime

    dep = deployed("stm32h743")
    mem, path = dep.manifest["memory"], dep.model_file
    arena = get_runtime("tflite-micro").arena_bytes(path)
    assert mem["working_memory_source"] == "measured (tflite-micro arena)"
    assert mem["working_memory_bytes"] == arena
    assert mem["peak_activation_bytes"] < arena <= dep.device.ram_bytes  # liveness is a lower bound
    assert mem["storage_bytes"] == path.stat().st_size <= dep.device.storage_bytes
    knee = dep.result.knee.figures  # the tuner's RAM constraint used the same measured figure
    assert knee["working_memory_bytes"] == arena and knee["working_memory_source"] == mem["working_memory_source"]
    # The figure is what the interpreter needs: it runs with exactly that arena, not with 3/4 of it.
    it = _tflm_interpreter(path, arena)
    it.set_input(np.zeros((1, 1, 28, 28), dtype=np.int8), 0)
    it.invoke()
    with pytest.raises(RuntimeError):
        _tflm_interpreter(path, arena * 3 // 4).invoke()


def test_pixel3_pte_export_runs_in_executorch_with_the_manifest_accuracy(deployed, tmp_path):
    import json

    pytest.importorskip("executorch")
    import torch
    from executorch.runtime import Runtime

    dep = deployed("pixel-3")
    out = tmp_path / "pte"
    _cli("export", str(dep.run_dir), "--trial", "knee", "--format", "pte", "-o", str(out))
    m = json.loads((out / "manifest.json").read_text())
    path = out / "model.pte"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.pte"]
    assert m["format"] == "pte" and m["runtime"] == m["evaluation"]["runtime"] == "executorch"
    assert m["precision_label"] == "int8" and m["latency"]["source"] == dep.manifest["latency"]["source"]
    method = Runtime.get().load_program(str(path)).load_method("forward")
    pixels, labels = _t10k(TEST_LIMIT)
    x = _normalized(pixels, m)
    got = np.concatenate([method.execute([torch.from_numpy(s[None])])[0].numpy() for s in x])
    assert abs(float((got.argmax(1) == labels).mean()) - m["test_accuracy"]) <= 0.01
    _check_like_torch(got, _torch_logits(_torch_knee(dep), x))
