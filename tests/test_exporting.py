"""Export round trip: the written model and its manifest agree with a fresh ONNX Runtime evaluation."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from support import cli_error

from hwtune.errors import ConfigError, ExportError, StudyError


def _fresh_eval(path, split):
    from hwtune.training import evaluate

    return evaluate(str(path), split).accuracy


@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_export_round_trip_manifest_matches_a_fresh_ort_evaluation(tuned_study, tmp_path, precision):
    from hwtune.exporting import export
    from hwtune.tuner import load_data

    trial = next(t for t in tuned_study.trials if t.trained and t.precision == precision and t.duplicate_of is None)
    exp = export(tuned_study, trial.number, tmp_path / "out")
    m = json.loads(exp.manifest_path.read_text())
    assert m == json.loads(json.dumps(exp.manifest, default=str))
    data = load_data(tuned_study.meta["data"]["load"])
    # figures in the manifest are what ONNX Runtime gives on the written file, now
    assert m["val_accuracy"] == pytest.approx(_fresh_eval(exp.model_path, data.val), abs=1e-9)
    assert m["test_accuracy"] == pytest.approx(_fresh_eval(exp.model_path, data.test), abs=1e-9)
    assert abs(m["val_accuracy"] - trial.accuracy) <= 0.01
    assert m["recorded_val_accuracy"] == pytest.approx(trial.accuracy)
    assert m["sha256"] == hashlib.sha256(exp.model_path.read_bytes()).hexdigest()
    assert m["input"]["shape"] == [1, 1, 28, 28]
    assert len(m["input"]["mean"]) == 1 and len(m["input"]["std"]) == 1 and m["input"]["std"][0] > 0
    assert m["class_names"][0] == "T-shirt/top" and len(m["class_names"]) == 10
    assert m["device"]["id"] == "host" and m["precision"] == precision
    assert m["latency"]["latency_ms"] == trial.latency_ms and m["latency"]["source"] == "measured"
    assert m["latency"]["runtime"] == "onnxruntime"
    assert m["memory"]["weight_bytes"] == trial.figures["weight_bytes"]
    assert m["memory"]["peak_activation_bytes"] == trial.figures["peak_activation_bytes"]
    assert m["candidate"] == trial.candidate
    assert set(m["versions"]) >= {"hwtune", "torch", "onnxruntime"}
    assert m["study"]["trial"] == trial.number
    if precision == "int8":
        import onnx

        ops = {n.op_type for n in onnx.load(str(exp.model_path)).graph.node}
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
        assert m["quantization"]["calibration_source"] == "data"


def test_export_refuses_a_model_that_lost_accuracy(tuned_study, tmp_path):
    from hwtune.exporting import export
    from hwtune.tuner import CandidatePipeline

    class BrokenShip(CandidatePipeline):
        """A conversion that breaks the model (every logit equal), injected as the export's pipeline."""

        def ship(self, model, *args, **kwargs):
            import torch

            with torch.no_grad():
                for p in model.parameters():
                    p.zero_()
            return super().ship(model, *args, **kwargs)

    trial = next(t for t in tuned_study.trials if t.trained and t.accuracy > 0.2)
    with pytest.raises(ExportError, match="refusing to write it"):
        export(tuned_study, trial.number, tmp_path / "bad", pipeline=BrokenShip)
    assert not (tmp_path / "bad" / "model.onnx").exists()
    assert not (tmp_path / "bad" / "manifest.json").exists()


def test_export_bad_inputs(tuned_study, tmp_path, capsys):
    from hwtune.cli import main
    from hwtune.exporting import export

    with pytest.raises(StudyError, match="has no trial 999"):
        export(tuned_study, 999, tmp_path / "x")
    with pytest.raises(ConfigError, match="format must be one of .*onnx.*got 'onx'; did you mean 'onnx'"):
        export(tuned_study, tuned_study.knee.number, tmp_path / "x", format="onx")
    with pytest.raises(StudyError, match="no study 'nope'"):
        export(tuned_study.storage, 0, tmp_path / "x", study_name="nope")
    rc = main(
        ["export", "--storage", tuned_study.storage, "--study", "tiny", "--trial", "999", "--out", str(tmp_path / "x")]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("hwtune: error:") and err.count("\n") == 1


def test_cli_export_writes_model_and_manifest(tuned_study, tmp_path, capsys):
    from hwtune.cli import main

    knee = tuned_study.knee.number
    rc = main(
        [
            "export",
            "--storage",
            tuned_study.storage,
            "--study",
            "tiny",
            "--trial",
            str(knee),
            "--format",
            "onnx",
            "--out",
            str(tmp_path / "cli"),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert f"exported trial #{knee}" in out and "test accuracy" in out
    assert (tmp_path / "cli" / "model.onnx").exists() and (tmp_path / "cli" / "manifest.json").exists()


# -- the output place is checked first; a failed write keeps the previous export ------------------------


def test_export_checks_its_output_before_any_work(old_run, tmp_path, capsys, monkeypatch):
    from hwtune import exporting

    def must_not_run(*a, **k):
        raise AssertionError("data was loaded before the output directory was checked")

    monkeypatch.setattr(exporting, "load_stored_data", must_not_run)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    line = cli_error(capsys, ["export", str(old_run), "--trial", "0", "-o", str(a_file / "out")])
    assert str(a_file / "out") in line and "a parent of it is a file" in line


def test_export_writes_model_then_manifest_or_nothing(old_run, tmp_path, monkeypatch, fashion_dir):
    from hwtune.exporting import export
    from hwtune.tuner import load_result, sha256_file

    result = load_result(f"sqlite:///{old_run / 'study.db'}", "tiny")
    trial = next(t for t in result.trials if t.precision == "fp32" and t.trained)
    out = tmp_path / "out"
    exp = export(result, trial.number, out)
    assert exp.manifest["sha256"] == sha256_file(exp.model_path)
    assert exp.manifest["file_bytes"] == exp.model_path.stat().st_size
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {"model.onnx", "manifest.json"}

    real_copy = shutil.copyfile

    def disk_full_in_out(src, dst, *a, **k):
        if Path(dst).parent == out:
            Path(dst).write_bytes(Path(src).read_bytes()[:100])  # half a model, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_copy(src, dst, *a, **k)

    monkeypatch.setattr(shutil, "copyfile", disk_full_in_out)
    with pytest.raises(ExportError, match=r"cannot write the model to .*model\.onnx \(No space left on device\)"):
        export(result, trial.number, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the previous export, whole


def test_int8_on_another_cpus_kernels_is_told_from_the_study_record(monkeypatch):
    from types import SimpleNamespace

    from hwtune import exporting, hostcpu

    monkeypatch.setattr(hostcpu, "detect_cpu", lambda: SimpleNamespace(isa=("sse4_2", "avx2", "fma")))
    assert exporting._other_int8_cpu({"detected": True, "isa": ["avx2", "avx512_vnni", "amx_int8"]})
    assert not exporting._other_int8_cpu({"detected": True, "isa": ["avx2", "f16c"]})  # same int8 kernels
    assert not exporting._other_int8_cpu({"detected": False, "isa": ["avx512_vnni"]})  # a device profile
    assert not exporting._other_int8_cpu({"detected": True}) and not exporting._other_int8_cpu(None)
