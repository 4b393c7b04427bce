"""``hwtune calibrate --suggest N`` (hwtune/predictor/_suggest.py): which networks to measure, and the template."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from hwtune.cli import main


def test_suggest_prints_networks_and_a_template_that_calibrates(tmp_path, capsys):
    import hwtune
    from hwtune.predictor import calibrate_networks

    out = tmp_path / "measure.csv"
    assert main(["calibrate", "--suggest", "5", "--pool", "24", "--base", "raspberry-pi-4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "measure these 5 networks (chosen from 24 of recipe cifar-nb201" in printed
    assert f"wrote the CSV template to {out}" in printed
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["name"] for r in rows] == [f"suggest-0{i}" for i in range(1, 6)]
    assert {r["latency_ms"] for r in rows} == {""} and {r["family"] for r in rows} == {"nb201"}
    assert len({r["knobs"] for r in rows}) == 5  # five distinct networks
    # filled in (here with a made-up device: 2 ms per MFLOP-ish + 1 ms), the template is a valid --networks CSV
    import json

    for r in rows:
        knobs = json.loads(r["knobs"])
        model = hwtune.create_model("nb201", knobs, num_classes=10, in_channels=3, input_size=32)
        r["latency_ms"] = f"{1.0 + 2e-6 * sum(p.numel() for p in model.parameters()):.4f}"
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    report = calibrate_networks(out, "raspberry-pi-4", tmp_path / "pi.toml")
    assert report.table["n_samples"] == 5 and report.names == tuple(r["name"] for r in rows)


def test_suggest_is_deterministic_and_spreads_the_sizes():
    from hwtune.predictor import model_features, suggest_networks
    from hwtune.predictor._features import Lowering
    from hwtune.space import SearchSpace

    a = suggest_networks(4, pool=24, base_profile="raspberry-pi-4")
    b = suggest_networks(4, pool=24, base_profile="raspberry-pi-4")
    assert a.candidates == b.candidates and a.pool == 24
    space = SearchSpace.from_recipe("cifar-nb201")

    def macs(c):
        feats, _ = model_features(space.build(c), (1, 3, 32, 32), "fp32", lowering=Lowering(eager=True))
        return sum(f.work for f in feats if f.key in ("conv", "pwconv", "dwconv", "linear"))

    chosen = [macs(c) for c in a.candidates]
    pool = [macs(space.sample(np.random.default_rng(s))) for s in range(24)]
    # D-optimal picks the extremes of the spread first: the chosen span most of the pool's range
    assert max(chosen) - min(chosen) >= 0.5 * (max(pool) - min(pool))


@pytest.mark.parametrize("argv, message", [
    (["--suggest", "2"], "--suggest needs at least 3 networks"),
    (["--suggest", "5", "--pool", "4"], "the pool (4) must hold at least the 5 networks to suggest"),
    (["--suggest", "5", "--spec"], "got 2 (--suggest N is a mode of its own)"),
])
def test_suggest_bad_arguments_are_one_line_exit_2(capsys, argv, message):
    assert main(["calibrate", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
