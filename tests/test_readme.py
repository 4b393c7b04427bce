"""Every shell and Python example in README.md, README.pypi.md (the wheel's description) and docs/*.md runs.

Each fenced block tagged ``bash``/``sh``/``shell`` runs as one bash script (``set -euo pipefail``), each
``python`` block as one script, in document order and in one scratch directory per document (so
``hwtune tune ... --out runs/x`` feeds the ``hwtune export runs/x`` after it). The test environment's
``bin`` directory comes first on ``PATH``, so ``hwtune`` and ``python`` are the installed ones. A block
preceded by the line ``<!-- test: repo -->`` runs at the repository root instead. Blocks tagged ``text``
(diagrams, transcripts) are not examples.

Examples that would take minutes run with smaller arguments: ``SUBSTITUTIONS`` below lists every
change, exactly, with the reason. Nothing else is changed, and every substitution must match its document
(so the table cannot silently drift from the docs). Examples that train, install or export are marked slow.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = [REPO / "README.md", REPO / "README.pypi.md", *sorted((REPO / "docs").glob("*.md"))]
LANGUAGES = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python"}
REPO_MARKER = "<!-- test: repo -->"

# The CPU-only torch build from PyTorch's own index is not reachable from the test machines (they reach
# PyPI and Debian only); this machine's local wheel store has a CPU build of torch 2.13.0, whose matching
# torchvision is 0.28.0. The substitution installs those instead: same command shape, same effect.
CPU_TORCH_WHEEL = Path("/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")
CPU_TORCHVISION = "torchvision==0.28.0"

SMALL_DATA = "--train-limit 2000 --val-limit 500"

# (document, text in the example, replacement, why). Placeholders: {scratch} is the document's scratch dir,
# {shared} one directory for all documents (the fresh environment both READMEs install into), {repo} the checkout.
SUBSTITUTIONS: list[tuple[str, str, str, str]] = [
    ("README.md", ".venv/bin/hwtune demo",
     ".venv/bin/hwtune demo --timeout 120 --trials 3 --finalize-epochs 1 --out {scratch}/hwtune-demo",
     ("the demo searches for 90 s and finalizes for 30 epochs; two minutes or 3 trials and one epoch take the "
     "same path (search, finalize, export)")),
    ("README.md", ".venv/bin/python -m pytest -q -n 2 --dist worksteal",
     ".venv/bin/python -m pytest -q -n 2 --dist worksteal --collect-only",
     "the full suite contains this test: collecting it checks the command without running the suite twice"),
    ("README.md", "~/hwtune-env", "{shared}/hwtune-env",
     "a fresh environment in the scratch directory instead of the user's home"),
    ("README.md", "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu",
     f"pip install {CPU_TORCH_WHEEL} {CPU_TORCHVISION}",
     ("PyTorch's CPU index is not reachable here: the local CPU build of torch 2.13.0 and PyPI's torchvision "
      "0.28.0 instead (that torchvision's compiled ops need the CUDA torch and do not load; the block's commands "
      "do not use them)")),
    ("README.md", "--trials 30 --max-latency-ms 0.2 --out runs/convnet",
     f"--trials 4 --max-latency-ms 0.2 --out runs/convnet --epochs 0.1 {SMALL_DATA}",
     "30 one-epoch trials on 50,000 images take an hour; 4 trials of 0.1 epoch on 2,000 images"),
    ("README.md", "--objectives accuracy,latency,memory -o runs/mcu",
     f"--objectives accuracy,latency,memory -o runs/mcu -n 3 --epochs 0.1 {SMALL_DATA}",
     "same reason: 3 short trials instead of 20 full ones"),
    ("README.md", "--max-params 100000 -o runs/small",
     f"--max-params 100000 -o runs/small -n 3 --epochs 0.1 {SMALL_DATA}",
     "same reason: 3 short trials instead of 20 full ones"),
    ("README.pypi.md", "~/hwtune-env", "{shared}/hwtune-env",
     "the same fresh environment as README.md's (installing into it again only adds what is missing)"),
    ("README.pypi.md", "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu",
     f"pip install {CPU_TORCH_WHEEL} {CPU_TORCHVISION}", "as for README.md"),
    ("README.pypi.md", "pip install hwtune-0.2.0-py3-none-any.whl ",
     "pip wheel --quiet --no-deps {repo} -w {shared}/dist && pip install {shared}/dist/hwtune-0.2.0-py3-none-any.whl ",
     "a pip user has the wheel; the test builds it from the checkout first"),
    ("README.pypi.md", "hwtune demo ", "hwtune demo --timeout 120 --trials 3 --finalize-epochs 1 -o {scratch}/hwtune-demo ",
     "as for README.md"),
    ("README.pypi.md", "-n 30 -o runs/convnet", f"-n 4 -o runs/convnet --epochs 0.1 {SMALL_DATA}",
     "as for README.md"),
    ("README.md", "--trials 40 --workers 2 --out runs/fc",
     f"--trials 4 --workers 2 --out runs/fc --epochs 0.1 {SMALL_DATA}",
     "same reason: 4 short trials shared by the two workers"),
    ("README.md", "--strategy inherit --trials 30 -o runs/inherit",
     f"--strategy inherit --trials 3 -o runs/inherit --epochs 0.1 --parent-epochs 0.2 {SMALL_DATA}",
     "a parent of 0.2 epoch and 3 short trials on 2,000 images take the same path"),
    ("README.md", "--trial knee --epochs 10", "--trial knee --epochs 0.1", "a tenth of an epoch instead of ten"),
    ("README.md", 'n_trials=30, out_dir="runs/api"',
     ('n_trials=3, out_dir="runs/api", budget=0.1, data={{"name": "fashion-mnist", "train_limit": 2000, '
      '"val_limit": 500}}'),
     "same reason, through the Python API"),
]

# An example is slow when it trains, installs, exports or measures big models.
SLOW_MARKERS = ("hwtune tune", "hwtune demo", "hwtune export", "hwtune finalize", "hwtune profile torchvision:mobilenet",
                "hwtune profile torchvision:resnet18",
                "runs/", "deploy", "setup.sh", "pip install", "hwtune.tune(", "profile_model(", "HWTUNE_PROGRESS")


@dataclass(frozen=True)
class Example:
    document: str
    line: int
    language: str
    code: str
    at_repo: bool

    @property
    def id(self) -> str:
        return f"{self.document}:{self.line}"


def extract_examples(path: Path) -> list[Example]:
    """The runnable fenced blocks of a Markdown file, in order."""
    examples: list[Example] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        lang, start = m.group(1).lower(), i
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        previous = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        if lang in LANGUAGES:
            examples.append(Example(str(path.relative_to(REPO)), start + 1, LANGUAGES[lang],
                                    "\n".join(lines[start + 1:end]) + "\n", previous == REPO_MARKER))
        i = end + 1
    return examples


ALL_EXAMPLES = [ex for doc in DOCUMENTS for ex in extract_examples(doc)]


def substituted(ex: Example, scratch: Path, shared: Path) -> str:
    code = ex.code
    for document, old, new, _why in SUBSTITUTIONS:
        if document == ex.document and old in code:
            code = code.replace(old, new.format(scratch=scratch, shared=shared, repo=REPO))
    return code


def _param(ex: Example):
    slow = any(marker in ex.code for marker in SLOW_MARKERS)
    return pytest.param(ex, id=ex.id, marks=[pytest.mark.slow] if slow else [])


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("shared")


@pytest.fixture(scope="module")
def scratch_dirs(tmp_path_factory):
    dirs: dict[str, Path] = {}

    def get(document: str) -> Path:
        if document not in dirs:
            dirs[document] = tmp_path_factory.mktemp(Path(document).stem)
        return dirs[document]

    return get


def test_every_document_with_code_has_examples_and_every_substitution_applies():
    assert {ex.document for ex in ALL_EXAMPLES} >= {"README.md", "README.pypi.md", "docs/cli.md"}
    for document, old, _new, why in SUBSTITUTIONS:
        hits = [ex for ex in ALL_EXAMPLES if ex.document == document and old in ex.code]
        assert len(hits) == 1, f"substitution for {document} ({why}) matches {len(hits)} examples: {old!r}"


def test_the_two_opening_commands_are_unchanged():
    first = extract_examples(REPO / "README.md")[0]
    assert "bash scripts/setup.sh && .venv/bin/hwtune demo\n" in first.code
    assert "bash scripts/setup.sh && .venv/bin/python -m pytest -q -n 2 --dist worksteal\n" in first.code


@pytest.mark.parametrize("example", [_param(ex) for ex in ALL_EXAMPLES])
def test_example_runs(example: Example, scratch_dirs, shared_dir):
    scratch = scratch_dirs(example.document)
    code = substituted(example, scratch, shared_dir)
    if CPU_TORCH_WHEEL.name in code and not CPU_TORCH_WHEEL.is_file():
        pytest.skip(f"the CPU-only torch wheel {CPU_TORCH_WHEEL} is not on this machine")
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    if example.language == "bash":
        argv = ["bash", "-c", "set -euo pipefail\n" + code]
    else:
        argv = [sys.executable, "-c", code]
    proc = subprocess.run(argv, cwd=REPO if example.at_repo else scratch, env=env, capture_output=True, text=True,
                          timeout=1800, check=False)
    assert proc.returncode == 0, (
        f"{example.id} exited {proc.returncode}\n--- code ---\n{code}\n--- stdout (tail) ---\n{proc.stdout[-3000:]}"
        f"\n--- stderr (tail) ---\n{proc.stderr[-3000:]}"
    )


# --------------------------------------------------------------------------------------------
# Measured figures: every number the README quotes from benchmarks/results/*.json equals the JSON.
#
# Each row: the results file, a pattern over the README (whitespace collapsed to single spaces, so a
# sentence may wrap anywhere) whose groups are the quoted numbers, and a function giving the JSON's
# values in the README's units, one per group. A quoted number with d decimals matches a value that
# rounds to it at d decimals. When a benchmark is re-run, update the README from its JSON; when a
# sentence is rewritten, update its pattern here (a pattern that matches nowhere fails, so no figure
# silently stops being checked).

RESULTS = REPO / "benchmarks" / "results"


@dataclass(frozen=True)
class Figure:
    source: str
    pattern: str
    values: Any  # Callable[[dict], Sequence[float]]


def _rows(d: dict, **match: Any) -> dict:
    hits = [r for r in d["rows"] if all(r.get(k) == v for k, v in match.items())]
    assert len(hits) == 1, f"{len(hits)} rows match {match}"
    return hits[0]


def _speedup_cl(d: dict, model: str, threads: int = 1) -> float:
    """images/s channels_last over contiguous (benchmarks/bench_training.py's throughput rows)."""
    rate = {r["channels_last"]: r["images_per_s_median"] for r in d["rows"]
            if r["model"] == model and r["device"] == "cpu" and r["threads"] == threads}
    return rate[True] / rate[False]


RESNET8_PARENT = "cifar-resnet parent (sandwich, ResNet-8 space)"


def _rate(d: dict, model: str, threads: int, channels_last: bool) -> float:
    """Median images/s of a CPU throughput row of bench_training.py (not an image-folder row)."""
    hits = [r for r in d["rows"] if r["model"] == model and r["device"] == "cpu" and r["threads"] == threads
            and r["channels_last"] == channels_last and "loader" not in r]
    assert len(hits) == 1, f"{len(hits)} rows match {model}, {threads} threads"
    return hits[0]["images_per_s_median"]


def _loader_rate(d: dict, loader: str, threads: int) -> float:
    """Median images/s of bench_training.py's image-folder rows: ``in-memory`` or ``dataloader`` (streamed)."""
    return _rows(d, loader=loader, threads=threads)["images_per_s_median"]


def _span(d: dict, key: str, rung: int) -> list[float]:
    """(min, max) of one phase over the eval-time stage's trials of ``rung`` (bench_mlperf_tiny.py)."""
    values = [p[key] for p in d["targets"]["candidate_eval_le_10s_timed_alone"]["phases"] if p["rung"] == rung]
    return [min(values), max(values)]


def _median(d: dict, key: str, rung: int) -> float:
    """The median of one phase over the eval-time stage's trials of ``rung`` (an odd count)."""
    values = sorted(p[key] for p in d["targets"]["candidate_eval_le_10s_timed_alone"]["phases"] if p["rung"] == rung)
    return values[len(values) // 2]


def _budget_clone(d: dict, run: int) -> dict:
    """bench_finalize.py --demo-clone's row of fresh-clone run ``run`` of the demo as released."""
    return d["capacity_trainval"]["runs"][run]["rows"][0]


def _tests(d: dict, key: str) -> list[float]:
    """Test accuracies (%) as shipped of the fresh-clone runs under ``key``, in run order."""
    return [100 * r["rows"][0]["test_accuracy_as_shipped"] for r in d[key]["runs"]]


def _budget_row(row: dict) -> list[float]:
    """K parameters, M MACs, test %, then setup, demo and README command 1 each as minutes, seconds."""
    times = (row["setup_seconds"], row["demo_wall_seconds"], row["readme_command_1_seconds"])
    return [row["params"] / 1000, row["macs"] / 1e6, 100 * row["test_accuracy_as_shipped"],
            *(v for t in times for v in (t // 60, t % 60))]


def _avx2_row(d: dict, key: str, run: int) -> list[float]:
    """A fresh-clone run on the AVX2-only EPYC: K parameters, M MACs, finalize epochs, test %, then the times."""
    row = d[key]["runs"][run]["rows"][0]
    k, m, test, *times = _budget_row(row)
    return [k, m, row["finalized"]["epochs"], test, *times]


def _seconds(d: dict, key: str) -> list[float]:
    """README command 1 seconds of the fresh clones under ``key``."""
    return [r["rows"][0]["readme_command_1_seconds"] for r in d[key]["runs"]]


def _met(d: dict, *keys: str) -> list[int]:
    """Fresh clones under ``keys`` that shipped at least 92.5% test, then how many there were."""
    tests = [t for k in keys for t in _tests(d, k)]
    return [sum(t >= 92.5 for t in tests), len(tests)]


def _command_1_range(d: dict, key: str) -> list[float]:
    """Quickest then slowest README command 1 under ``key``, each as minutes, seconds."""
    seconds = _seconds(d, key)
    return [v for t in (min(seconds), max(seconds)) for v in (t // 60, t % 60)]


def _member_rows(d: dict, keys: tuple[str, ...], params: int) -> list[dict]:
    """The fresh-clone rows under ``keys`` that shipped the member of ``params`` parameters, in run order."""
    return [r["rows"][0] for k in keys for r in d[k]["runs"] if r["rows"][0]["params"] == params]


def _epoch_seconds_range(d: dict, keys: tuple[str, ...]) -> list[float]:
    """Fewest and most finalize seconds per epoch of the 97 K member's channels-last runs under ``keys``."""
    rates = [r["finalize_seconds"] / r["finalized"]["epochs"] for r in _member_rows(d, keys, 97114)
             if "channels_last" in r["finalized"]["train_device"]]
    return [min(rates), max(rates)]


def _recipe_check(d: dict, name: str, seed: int) -> dict:
    """One run of recipe_checks_avx2_equal_time."""
    (run,) = [r for r in d["recipe_checks_avx2_equal_time"]["runs"] if r["name"] == name and r["seed"] == seed]
    return run


def _miss_row(d: dict, key: str) -> dict:
    """The one fresh-clone row under ``key`` that missed 92.5%."""
    (row,) = [r["rows"][0] for r in d[key]["runs"] if r["rows"][0]["test_accuracy_as_shipped"] < 0.925]
    return row


def _race(row: dict) -> float:
    """The memory-format race's ratio a finalize recorded ('cpu, fp32, contiguous (measured 1.04x)')."""
    return float(row["finalized"]["train_device"].rsplit("measured ", 1)[1].split("x")[0])


def _member_range(d: dict, params: int) -> list[float]:
    """Test % (lowest, highest) then finalize epochs (fewest, most) of one member across the AVX2 runs at f72675f,
    ebbf1ac and 75ce941."""
    rows = _member_rows(d, ("avx2_demo", "avx2_race", "avx2_race_more"), params)
    tests = [100 * r["test_accuracy_as_shipped"] for r in rows]
    epochs = [r["finalized"]["epochs"] for r in rows]
    return [min(tests), max(tests), min(epochs), max(epochs)]


# (commit, key in demo-finalize.json, run, seed) of the README's table of fresh clones on the AVX2-only EPYC.
AVX2_RUNS = [("ea074c8", "avx2_fresh_clone", 0, 0), *(("df52555", "avx2_fresh_clone", s + 1, s) for s in range(4)),
             *(("f72675f", "avx2_demo", s, s) for s in range(4)), *(("ebbf1ac", "avx2_race", s, s) for s in range(4)),
             *(("75ce941", "avx2_race_more", s, s + 4) for s in range(2)),
             *(("7cf0c35", "avx2_probe_counted", s, s) for s in range(4)),
             *(("e327fa4", "avx2_probe_counted_more", s, s + 4) for s in range(2))]


def _speedup_ranges(d: dict) -> list[float]:
    """memory-format.json: lowest and highest channels-last speedup of the members below 1.05x, then of the rest."""
    slow = [r["speedup"] for r in d["rows"] if r["speedup"] < 1.05]
    fast = [r["speedup"] for r in d["rows"] if r["speedup"] >= 1.05]
    return [min(slow), max(slow), min(fast), max(fast)]


def _margin(d: dict, margin: float) -> dict:
    """memory-format.json: what picking by the races with ``margin`` cost."""
    return next(s for s in d["by_margin"] if abs(s["margin"] - margin) < 1e-9)


def _hits_then_misses(tests: list[float]) -> list[float]:
    """Test accuracies (%) reaching 92.5 in run order, then the misses from lowest."""
    return [*(t for t in tests if t >= 92.5), *sorted(t for t in tests if t < 92.5)]


def _clone(d: dict, run: int) -> dict:
    """bench_finalize.py --demo-clone's row of fresh-clone run ``run`` (README command 1, timed)."""
    return d["fresh_clone"]["runs"][run]["rows"][0]


def _accuracy_row(d: dict, augment: str) -> dict:
    """bench_training.py --part accuracy's row for one augmentation setting (``none``, ``crop:4,hflip``)."""
    return next(r for r in d["accuracy"]["rows"] if r["augment"] == augment)


def _model(d: dict, model: str, runtime: str, precision: str, key: str = "latency_best_round_us") -> float:
    return _rows(d["models"][model], runtime=runtime, precision=precision)[key]


def _summary(d: dict, method: str, checkpoint: float, key: str = "hv_mean") -> float:
    return d["summary"][method][str(float(checkpoint))][key]


def _large(d: dict, model: str) -> float:
    return next(r for r in d["large_inputs"] if r["model"] == model)["int8_speedup_vs_ort_fp32"]


HWTUNE_TARGETS = ("2x", "4x")  # the targets bench_compress's hwtune rows reached (README quotes each)


def _target(d: dict, method: str, target: str) -> dict:
    return next(r for r in d[method]["rows"] if r["target"] == target)


def _scheme_row(d: dict, model: str) -> dict:
    return next(r for r in d["large_inputs"] if r["model"] == model)


def _compression(d: dict, family: str, precision: str, key: str) -> float:
    return _rows(d, family=family, precision=precision, runtime="onnxruntime")[key]


def _cal(d: dict) -> dict:
    """The calibration summary of bench_predictor (the issue's targets)."""
    return d["calibrations"]["summary"]


def _worst_draw(d: dict, device: str) -> list[float]:
    """Spearman and FLOPs' Spearman of a setting's draw furthest below FLOPs."""
    draws = d["calibrations"]["devices"][device]["random"]["draws"]
    worst = min(draws, key=lambda r: r["spearman"] - r["flops_spearman"])
    return [worst["spearman"], worst["flops_spearman"]]


def _pairs(d: dict) -> list[tuple[dict, dict]]:
    """(one device, all devices) runs of each repetition of bench_multidevice."""
    primary = d["devices"].split(",")[0]
    reps = sorted({r["rep"] for r in d["runs"]})
    return [(next(r for r in d["runs"] if r["rep"] == k and r["devices"] == primary),
             next(r for r in d["runs"] if r["rep"] == k and r["devices"] == d["devices"])) for k in reps]


def _within(values: list[float], fraction: float) -> int:
    mid = sorted(values)[len(values) // 2]
    return sum(abs(v / mid - 1) <= fraction for v in values)


FIGURES: list[Figure] = [
    Figure("profiler.json",
           r"small Fashion-MNIST CNN profiles fully \([^)]*\) in (\d+\.\d+) s; MobileNetV2 @224 in (\d+\.\d+) s",
           lambda d: [d["models"]["fashion_cnn_28"]["profile_seconds"], d["models"]["mobilenet_v2_224"]["profile_seconds"]]),
    Figure("profiler.json", r"\(CV (\d+)% / (\d+)%\)",
           lambda d: [100 * d["models"]["fashion_cnn_28"]["cv"], 100 * d["models"]["mobilenet_v2_224"]["cv"]]),
    Figure("profiler.json", r"(\d+) of (\d+) \(small CNN\) and (\d+) of (\d+) \(MobileNetV2\) repetitions within ±1\.5%",
           lambda d: [x for m in ("fashion_cnn_28", "mobilenet_v2_224")
                      for x in (_within(d["models"][m]["latency_ms_all"], 0.015), len(d["models"][m]["latency_ms_all"]))]),
    Figure("compression-avx2-v01.json", r"convnet int8 (\d+\.\d+)% vs fp32 (\d+\.\d+)%, (\d+\.\d+)x faster than ORT fp32 "
                               r"\(mixed (\d+\.\d+)x\)",
           lambda d: [100 * _compression(d, "convnet", "int8", "val_accuracy"),
                      100 * _compression(d, "convnet", "fp32", "val_accuracy"),
                      _compression(d, "convnet", "int8", "speedup_vs_ort_fp32"),
                      _compression(d, "convnet", "mixed", "speedup_vs_ort_fp32")]),
    Figure("compression-avx2-v01.json", r"MobileNetV2 int8 (\d+\.\d+)% vs (\d+\.\d+)%, \*\*not faster\*\* at 28x28 \((\d+\.\d+)x",
           lambda d: [100 * _compression(d, "mobilenet_v2", "int8", "val_accuracy"),
                      100 * _compression(d, "mobilenet_v2", "fp32", "val_accuracy"),
                      _compression(d, "mobilenet_v2", "int8", "speedup_vs_ort_fp32")]),
    Figure("compression-avx2-v01.json", r"int8 speed-up (\d+\.\d+)x MobileNetV2 0\.35, (\d+\.\d+)x MobileNetV2 1\.0, "
                               r"(\d+\.\d+)x ResNet-18",
           lambda d: [_large(d, "mobilenet_v2 0.35 @224"), _large(d, "mobilenet_v2 1.0 @224"), _large(d, "resnet18 @224")]),
    Figure("compression.json", r"runs ResNet-18 (\d+\.\d+)x faster than fp32 \(s8s8, what the\s+old \"VNNI -> s8\" rule "
                               r"shipped: (\d+\.\d+)x\) and MobileNetV2 1\.0 (\d+\.\d+)x \(s8s8 (\d+\.\d+)x\)\. The shipped "
                               r"scheme took\s+(\d+\.\d+)x / (\d+\.\d+)x the time of the fastest",
           lambda d: [_scheme_row(d, "resnet18 @224")["speedup_vs_fp32"]["shipped"],
                      _scheme_row(d, "resnet18 @224")["speedup_vs_fp32"]["s8s8"],
                      _scheme_row(d, "mobilenet_v2 1.0 @224")["speedup_vs_fp32"]["shipped"],
                      _scheme_row(d, "mobilenet_v2 1.0 @224")["speedup_vs_fp32"]["s8s8"],
                      _scheme_row(d, "resnet18 @224")["shipped_vs_fastest"],
                      _scheme_row(d, "mobilenet_v2 1.0 @224")["shipped_vs_fastest"]]),
    Figure("compression.json", r"same u8s8 settings differ by (\d+\.\d+)x / (\d+\.\d+)x in that run",
           lambda d: [_scheme_row(d, m)["paired_ratio"]["shipped"] / _scheme_row(d, m)["paired_ratio"]["u8s8"]
                      for m in ("resnet18 @224", "mobilenet_v2 1.0 @224")]),
    Figure("compression.json", r"Choosing the scheme took\s+(\d+\.\d+) s the first time",
           lambda d: [d["scheme_choice"]["first_measurement_s"]]),
    Figure("predictor.json", r"mean Spearman (\d\.\d+) vs FLOPs (\d\.\d+) on the same rows; the worst draw ranks at "
                             r"least like FLOPs on (\d+) of (\d+) settings",
           lambda d: [_cal(d)["spearman_mean"], _cal(d)["flops_spearman_mean"],
                      len(_cal(d)["worst_draw_at_least_flops"]), _cal(d)["settings"]]),
    Figure("predictor.json", r"`titan_rtx_256`: one draw picked the Raspberry Pi 4 direction, (\d\.\d+) vs (\d\.\d+)\)",
           lambda d: _worst_draw(d, "titan_rtx_256")),
    Figure("predictor.json", r"server CPUs \(Xeon Gold 6240, Silver 4210R\) (\d\.\d+) on average",
           lambda d: [_cal(d)["server_cpu_spearman_mean"]]),
    Figure("predictor.json", r"`hwtune calibrate --suggest 10` picks: (\d\.\d+) on average vs (\d\.\d+) for random draws",
           lambda d: [_cal(d)["suggested_spearman_mean"], _cal(d)["random_spearman_mean"]]),
    Figure("predictor.json", r"Five more draws per setting: (\d+) of (\d+) below FLOPs",
           lambda d: [_cal(d)["more_seeds"]["draws_below_flops"], _cal(d)["more_seeds"]["draws"]]),
    Figure("predictor.json", r"rank held-out networks at Spearman (\d\.\d+) / (\d\.\d+) \(FLOPs alone (\d\.\d+) / "
                             r"(\d\.\d+)\)",
           lambda d: [*(d["calibrations"]["devices"][x]["suggested"]["spearman"][0] for x in ("raspberry-pi-4", "pixel-3")),
                      *(d["calibrations"]["devices"][x]["suggested"]["flops_spearman"][0]
                        for x in ("raspberry-pi-4", "pixel-3"))]),
    Figure("predictor.json", r"ranks better than FLOPs on (\d+) of (\d+) CPU/phone settings leave-device-out "
                             r"\((\d\.\d+) vs (\d\.\d+)\)",
           lambda d: [len(d["spec_only"]["strictly_better_than_flops"]), len(d["spec_only"]["devices"]),
                      d["spec_only"]["spec_form"]["spearman"], d["spec_only"]["spec_form"]["flops_spearman"]]),
    Figure("predictor.json", r"(\d+\.\d+) ms CPU per unseen architecture",
           lambda d: [d["predict_ms"]["raspberry-pi-4"]["median_ms"]]),
    Figure("search.json", r"mean hypervolume (\d\.\d+) / (\d\.\d+) / (\d\.\d+) at 100 / 200 / 300 s vs "
                          r"(\d\.\d+) / (\d\.\d+) / (\d\.\d+) for plain NSGA-II training every candidate fully and "
                          r"(\d\.\d+) / (\d\.\d+) / (\d\.\d+) for random search",
           lambda d: [_summary(d, m, c) for m in ("hwtune", "nsga2-full", "random") for c in (100, 200, 300)]),
    Figure("search-inherit.json", r"parent took ([\d,]+) s once", lambda d: [d["settings"]["shared_parent"]
                                                                           ["seconds_by_seed"]["0"]]),
    Figure("search-inherit.json", r"`inherit` reached hypervolume (\d\.\d+) in 10 minutes of search \((\d+) candidates, "
                                  r"(\d+\.\d+) s median per candidate, best (\d+\.\d+)% validation under the latency "
                                  r"budget\) against (\d\.\d+) / (\d\.\d+) / (\d\.\d+) for `scratch` at 10 / 20 / 30 "
                                  r"minutes \(best (\d+\.\d+)%\)",
           lambda d: [_summary(d, "inherit", 600), _summary(d, "inherit", 600, "trials_mean"),
                      _summary(d, "inherit", 600, "seconds_per_candidate_median"),
                      100 * _summary(d, "inherit", 600, "best_accuracy_under_budget_mean"),
                      *(_summary(d, "hwtune", c) for c in (600, 1200, 1800)),
                      100 * _summary(d, "hwtune", 1800, "best_accuracy_under_budget_mean")]),
    *(Figure("demo-finalize.json", rf"\| {cmd} \| \w+, (\d+) K parameters, (\d+\.\d+) M MACs \| \*\*(\d+\.\d+)%\*\* \| "
                                   r"(\d+):(\d+) \+ (\d+):(\d+) = \*\*(\d+):(\d+)\*\* \|",
             lambda d, i=i: _budget_row(_budget_clone(d, i)))
      for i, cmd in enumerate((r"`hwtune demo`", *(rf"`hwtune demo --seed {s}`" for s in (1, 2, 3))))),
    *(Figure("demo-finalize.json", rf"\| `hwtune demo{'' if seed == 0 else f' --seed {seed}'}` \| {commit} \| \w+, "
                                   r"(\d+) K parameters, (\d+\.\d+) M MACs \| (\d+(?:\.\d+)?) \| \*\*(\d+\.\d+)%\*\* \| "
                                   r"(\d+):(\d+) \+ (\d+):(\d+) = \*\*(\d+):(\d+)\*\* \|",
             lambda d, k=key, r=run: _avx2_row(d, k, r))
      for commit, key, run, seed in AVX2_RUNS),
    Figure("demo-finalize.json", r"With df52555 the demo met 92\.5% in (\d) of (\d) fresh clones",
           lambda d: [sum(t >= 92.5 for t in _tests(d, "avx2_fresh_clone")[1:]), len(_tests(d, "avx2_fresh_clone")[1:])]),
    Figure("demo-finalize.json", r"would have fitted \((\d+) s and (\d+) s, scoring\s+included\), reached (\d+\.\d+)% and "
                                 r"(\d+\.\d+)%",
           lambda d: [*(r["finalized"]["seconds"] for r in d["recipe_checks_avx2"]["rows"]),
                      *(100 * r["test_accuracy_as_shipped"] for r in d["recipe_checks_avx2"]["rows"])]),
    Figure("demo-finalize.json", r"\*\*(\d) of (\d)\*\* \((\d+\.\d+)%, (\d+\.\d+)%; misses (\d+\.\d+)%, (\d+\.\d+)%\), README "
                                 r"command 1 in (\d+):(\d+)-(\d+):(\d+)",
           lambda d: [*_met(d, "avx2_demo"),
                      *_hits_then_misses(_tests(d, "avx2_demo")),
                      *_command_1_range(d, "avx2_demo")]),
    Figure("demo-finalize.json", r"\*\*(\d) of (\d)\*\* again \((\d+\.\d+)%, (\d+\.\d+)%; misses (\d+\.\d+)%, (\d+\.\d+)%\), "
                                 r"README command 1 in\s+(\d+):(\d+)-(\d+):(\d+)",
           lambda d: [*_met(d, "avx2_race"),
                      *sorted((t for t in _tests(d, "avx2_race") if t >= 92.5), reverse=True),
                      *sorted(t for t in _tests(d, "avx2_race") if t < 92.5),
                      *_command_1_range(d, "avx2_race")]),
    Figure("demo-finalize.json", r"Two more seeds at 75ce941: \*\*(\d) of (\d)\*\* \((\d+\.\d+)%; miss (\d+\.\d+)%, a "
                                 r"(\d+),(\d+)-parameter member of (\d+\.\d+) M\s+MACs, whose race read (\d+\.\d+)x, so it "
                                 r"trained contiguous\), README command 1 in (\d+):(\d+)-(\d+):(\d+): \*\*(\d) of (\d)\*\*",
           lambda d: [*_met(d, "avx2_race_more"),
                      *_hits_then_misses(_tests(d, "avx2_race_more")),
                      *divmod(_miss_row(d, "avx2_race_more")["params"], 1000),
                      _miss_row(d, "avx2_race_more")["macs"] / 1e6, _race(_miss_row(d, "avx2_race_more")),
                      *_command_1_range(d, "avx2_race_more"), *_met(d, "avx2_race", "avx2_race_more")]),
    Figure("demo-finalize.json", r"\*\*(\d) of (\d)\*\* \((\d+\.\d+)%, (\d+\.\d+)%, (\d+\.\d+)%, (\d+\.\d+)%\), README "
                                 r"command 1 in\s+(\d+):(\d+)-(\d+):(\d+): \*\*(\d) of (\d+)\*\* with the race of ebbf1ac\. "
                                 r"The change can only shorten a finalize\. These four trained faster\s+than the earlier "
                                 r"runs of the same members: (\d+\.\d+) s per epoch for the 97 K member in both "
                                 r"\(finalize time over epochs\),\s+against (\d+\.\d+)-(\d+\.\d+) s in its earlier "
                                 r"channels-last runs\. So (\d+\.\d+) and (\d+\.\d+) of its epochs fitted, and it "
                                 r"shipped (\d+\.\d+)%\s+and (\d+\.\d+)%",
           lambda d: [*_met(d, "avx2_probe_counted"),
                      *_hits_then_misses(_tests(d, "avx2_probe_counted")),
                      *_command_1_range(d, "avx2_probe_counted"),
                      *_met(d, "avx2_race", "avx2_race_more", "avx2_probe_counted"),
                      *sorted({round(v, 1) for v in _epoch_seconds_range(d, ("avx2_probe_counted",))}),  # "in both"
                      *_epoch_seconds_range(d, ("avx2_demo", "avx2_race")),
                      *(r["finalized"]["epochs"] for r in _member_rows(d, ("avx2_probe_counted",), 97114)),
                      *(100 * r["test_accuracy_as_shipped"] for r in _member_rows(d, ("avx2_probe_counted",), 97114))]),
    Figure("demo-finalize.json", r"The 97 K member stays on the edge of the target here: finalized for (\d+\.\d+) epochs at "
                                 r"f72675f, it had\s+shipped (\d+\.\d+)%",
           lambda d: [(r := _member_rows(d, ("avx2_demo",), 97114)[0])["finalized"]["epochs"],
                      100 * r["test_accuracy_as_shipped"]]),
    Figure("demo-finalize.json", r"e327fa4 \(as 7cf0c35\), seeds 4 and 5: \*\*(\d) of (\d)\*\* \((\d+\.\d+)%, (\d+\.\d+)%\), "
                                 r"README command 1 in (\d+):(\d+)-(\d+):(\d+)\. Seed 4 shipped\s+the (\d+) K member of "
                                 r"(\d+\.\d+) M MACs for the (\d+) epochs that fitted this time, just at the target; with "
                                 r"75ce941, fewer\s+than 20 of its epochs had fitted, and the (\d+),(\d+)-parameter member "
                                 r"it shipped instead reached (\d+\.\d+)%\. \*\*(\d) of (\d)\*\* with\s+the demo's "
                                 r"current code, \*\*(\d) of (\d+)\*\* with the race of ebbf1ac",
           lambda d: [*_met(d, "avx2_probe_counted_more"), *_hits_then_misses(_tests(d, "avx2_probe_counted_more")),
                      *_command_1_range(d, "avx2_probe_counted_more"),
                      (r := d["avx2_probe_counted_more"]["runs"][0]["rows"][0])["params"] / 1000, r["macs"] / 1e6,
                      r["finalized"]["epochs"], *divmod(d["avx2_race_more"]["runs"][0]["rows"][0]["params"], 1000),
                      100 * d["avx2_race_more"]["runs"][0]["rows"][0]["test_accuracy_as_shipped"],
                      *_met(d, "avx2_probe_counted", "avx2_probe_counted_more"),
                      *_met(d, "avx2_race", "avx2_race_more", "avx2_probe_counted", "avx2_probe_counted_more")]),
    Figure("demo-finalize.json", r"the 100 K member \(3\.70 M MACs, depth 2/2/2\) shipped (\d+\.\d+)-(\d+\.\d+)% after "
                                 r"(\d+\.\d+)-(\d+\.\d+)\s+epochs and the 97 K member \(3\.98 M MACs, depth 1/2/1, 5x5 "
                                 r"kernels\) (\d+\.\d+)-(\d+\.\d+)% after (\d+\.\d+)-(\d+\.\d+)",
           lambda d: [*_member_range(d, 99578), *_member_range(d, 97114)]),
    Figure("memory-format.json", r"16 random fashion-convnet members trained (\d+\.\d+)-(\d+\.\d+)x or (\d+\.\d+)-(\d+\.\d+)x as "
                                 r"fast in channels-last, the races picked the slower format in (\d+) of (\d+) races, "
                                 r"(\d+\.\d+)% more training time on average, where a 1\.15x margin would have in (\d+), "
                                 r"(\d+\.\d+)%",
           lambda d: [*_speedup_ranges(d), *(_margin(d, 1.05)[k] for k in ("wrong", "races", "mean_extra_pct")),
                      *(_margin(d, 1.15)[k] for k in ("wrong", "mean_extra_pct"))]),
    Figure("demo-finalize.json", r"its 97 K member fine-tuned from its search weights for the (\d+\.\d+) epochs the demo "
                                 r"gave it, fp32 test,\s+1 thread each, two at a time\)\. As the demo does it: (\d+\.\d+)% "
                                 r"and (\d+\.\d+)% with two seeds of the sample order\. A peak\s+learning rate of 0\.1: "
                                 r"(\d+\.\d+)% and (\d+\.\d+)%\. Label smoothing 0\.1: (\d+\.\d+)%\. Random erasing "
                                 r"after shift-flip: (\d+\.\d+)%\s+\(p 0\.25\) and (\d+\.\d+)% \(p 0\.5\)\. Batch 256: "
                                 r"(\d+\.\d+)%\. Batch 64 for the (\d+\.\d+) epochs of equal time: (\d+\.\d+)% and "
                                 r"(\d+\.\d+)%",
           lambda d: [_recipe_check(d, "base", 0)["epochs"],
                      *(100 * _recipe_check(d, n, seed)["test_fp32"]
                        for n, seed in (("base", 0), ("base", 1), ("lr01", 0), ("lr01", 1), ("ls01", 0), ("er25", 0),
                                        ("er50", 0), ("bs256", 0))),
                      _recipe_check(d, "bs64", 0)["epochs"],
                      *sorted(100 * _recipe_check(d, n, 0)["test_fp32"] for n in ("bs64", "bs64hi"))]),
    Figure("demo-finalize.json", r"the most accurate other one \((\d+\.\d+)% validation\) at equal time, the seed-0 member "
                                 r"reached (\d+\.\d+)% fp32 test in (\d+\.\d+) epochs, against (\d+\.\d+)% in (\d+\.\d+) "
                                 r"epochs without",
           lambda d: [100 * d["distillation_check_avx2"]["teacher_val_accuracy"],
                      *(v for name in ("kd", "plain") for r in d["distillation_check_avx2"]["runs"] if r["name"] == name
                        for v in (100 * r["test_fp32"], r["epochs"]))]),
    Figure("demo-finalize.json", r"in 2 of 5 before the parameter limit and the time\s+budget \((\d+\.\d+)% and "
                                 r"(\d+\.\d+)%, both one 96,794-parameter architecture; misses (\d+\.\d+)%, "
                                 r"(\d+\.\d+)%, (\d+\.\d+)%\)",
           lambda d: [100 * _clone(d, i)["test_accuracy_as_shipped"] for i in range(5)]),
    Figure("demo-finalize.json", r"\*\*So the demo met 92\.5% in (\d) of (\d) fresh clones\*\*",
           lambda d: [sum(t >= 92.5 for t in _tests(d, "capacity_trainval")), len(_tests(d, "capacity_trainval"))]),
    Figure("demo-finalize.json", r"[Ss]hipping the most accurate member\s+reached 92\.5% in 1 of 4 \((\d+\.\d+)%; misses "
                                 r"(\d+\.\d+)%, (\d+\.\d+)%, (\d+\.\d+)%\)",
           lambda d: _hits_then_misses(_tests(d, "fresh_clone_budget"))),
    Figure("demo-finalize.json", r"the most accurate member reached 92\.5% in 2 of 4 \((\d+\.\d+)%, (\d+\.\d+)%;\s+"
                                 r"misses (\d+\.\d+)%, (\d+\.\d+)%,",
           lambda d: _hits_then_misses(_tests(d, "fresh_clone_trainval"))),
    Figure("demo-finalize.json", r"reached it in 1 of 4 \((\d+\.\d+)%; misses (\d+\.\d+)%, (\d+\.\d+)%, (\d+\.\d+)%\)",
           lambda d: _hits_then_misses([100 * r["rows"][0]["test_accuracy_as_shipped"]
                                        for r in d["capacity_pick"]["runs"]])),
    Figure("demo-finalize.json", r"with 500 s, one\s+of those fresh clones finished in (\d+):(\d+) \(setups took (\d+)-(\d+) s\)",
           lambda d: [(t := max(r["rows"][0]["readme_command_1_seconds"] for r in d["capacity_pick"]["runs"])) // 60,
                      t % 60, *(f(r["rows"][0]["setup_seconds"] for r in d["capacity_pick"]["runs"]) for f in (min, max))]),
    Figure("finalize.json", r"went from (\d+\.\d+)% to (\d+\.\d+)% validation and \*\*(\d+\.\d+)% test as shipped\*\* "
                            r"\(ONNX Runtime; search \+ finalize (\d+) minutes",
           lambda d: [100 * d["rows"][0]["search_val_accuracy"], 100 * d["rows"][0]["finalized"]["val_accuracy"],
                      100 * d["rows"][0]["test_accuracy_as_shipped"],
                      d["rows"][0]["compute_seconds_search_plus_finalize"] / 60]),
    Figure("finalize.json", r"a (\d+) K all-int8 candidate reached (\d+\.\d+)% test",
           lambda d: [_rows(d, precision="int8")["params"] / 1000, 100 * _rows(d, precision="int8")["test_accuracy_as_shipped"]]),
    Figure("finalize.json", r"`--augment shift-flip` lowered the (\d+) K model to (\d+\.\d+)%",
           lambda d: [d["rows"][1]["params"] / 1000, 100 * d["rows"][1]["test_accuracy_as_shipped"]]),
    Figure("training.json", r"1 thread: (\d+\.\d+)x for the\s+fashion-resnet parent, (\d+\.\d+)x for the ResNet-8 parent, "
                            r"(\d+\.\d+)x for the largest fashion-convnet",
           lambda d: [_speedup_cl(d, "fashion-resnet parent (sandwich)"), _speedup_cl(d, RESNET8_PARENT),
                      _speedup_cl(d, "fashion-convnet largest (train)")]),
    Figure("training.json", r"1-minute load (\d+\.\d+) at the start, (\d+\.\d+) at the end",
           lambda d: [d["machine"]["loadavg"][0], d["loadavg_after"][0]]),
    Figure("training.json", r"trains at (\d+\.\d+) images/s contiguous and (\d+\.\d+) channels-last, the fashion-resnet "
                            r"parent at (\d+\.\d+) and (\d+\.\d+)\.",
           lambda d: [_rate(d, RESNET8_PARENT, 1, False), _rate(d, RESNET8_PARENT, 1, True),
                      _rate(d, "fashion-resnet parent (sandwich)", 1, False),
                      _rate(d, "fashion-resnet parent (sandwich)", 1, True)]),
    Figure("training.json", r"\(ResNet-8 parent (\d+\.\d+) images/s contiguous\)",
           lambda d: [_rate(d, RESNET8_PARENT, 2, False)]),
    Figure("training.json", r"ran at (\d+\.\d+) images/s in memory .*? and (\d+\.\d+) images/s streamed .*? streaming cost "
                            r"(\d+\.\d+)x at 1 thread here \((\d+\.\d+) vs (\d+\.\d+) at 2 threads\)",
           lambda d: [_loader_rate(d, "in-memory", 1), _loader_rate(d, "dataloader", 1),
                      _loader_rate(d, "dataloader", 1) / _loader_rate(d, "in-memory", 1),
                      _loader_rate(d, "in-memory", 2), _loader_rate(d, "dataloader", 2)]),
    Figure("training.json", r"from a probe of its CPU cost per image, (\d+\.\d+) vs (\d+\.\d+) CPU-ms",
           lambda d: [_accuracy_row(d, "none")["probe_cpu_ms_per_image"],
                      _accuracy_row(d, "crop:4,hflip")["probe_cpu_ms_per_image"]]),
    Figure("training.json", r"without augmentation (\d+\.\d+) epochs took (\d+) CPU-seconds and reached (\d+\.\d+)% "
                            r"test, with\s+`crop:4,hflip` (\d+\.\d+) epochs took (\d+) CPU-seconds and reached "
                            r"\*\*(\d+\.\d+)%\*\*",
           lambda d: [v for aug in ("none", "crop:4,hflip") for v in (
               _accuracy_row(d, aug)["epochs"], _accuracy_row(d, aug)["train_cpu_seconds"],
               100 * _accuracy_row(d, aug)["test_accuracy"])]),
    Figure("multidevice-predicted.json", r"Pi 5 \(predicted\) cost (\d+\.\d+)x host alone \(median of (\d+) pairs, "
                                         r"(\d+\.\d+)x and (\d+\.\d+)x",
           lambda d: [d["ratio_median"], len(d["runs"]) // 2,
                      *(many["seconds"] / one["seconds"] for one, many in _pairs(d))]),
    Figure("multidevice.json", r"an int8 `\.tflite` export each\): (\d+\.\d+)x", lambda d: [d["ratio_median"]]),
    Figure("compress.json", r"with plain torch for (\d+) epochs on 55,000 training images \(crop \+ flip, one-cycle\): "
                            r"\*\*(\d+\.\d+)% test\*\* \((\d+\.\d+)% int8\)",
           lambda d: [d["baseline"]["epochs"], 100 * d["baseline"]["test_accuracy_fp32_torch"],
                      100 * d["baseline"]["test_accuracy_int8_onnx"]]),
    *(Figure("compress.json", target + r": trial (\d+), (\d+\.\d+) M MACs \((\d+\.\d+)x fewer\), \w+, "
                              r"\*\*(\d+\.\d+)%\*\* \(([+-]\d+\.\d+) points lost",
             lambda d, t=target: [_target(d, "hwtune", t)["trial"], _target(d, "hwtune", t)["macs"] / 1e6,
                                  d["hwtune"]["verdict"][t]["macs_reduction"],
                                  100 * _target(d, "hwtune", t)["test_accuracy_as_shipped"],
                                  d["hwtune"]["verdict"][t]["drop_points"]])
      for target in HWTUNE_TARGETS),
    Figure("compress.json", r"distilled epochs, int8: (\d+\.\d+)% at (\d+\.\d+)x \(([+-]\d+\.\d+), [a-z ]+\); "
                            r"(\d+\.\d+)% at (\d+\.\d+)x \(([+-]\d+\.\d+)",
           lambda d: [v for t in ("2x", "4x") for v in (
               100 * _target(d, "torch_pruning_uniform", t)["test_accuracy_as_shipped"],
               d["torch_pruning_uniform"]["verdict"][t]["macs_reduction"],
               d["torch_pruning_uniform"]["verdict"][t]["drop_points"])]),
    Figure("compress.json", r"held-out accuracy\): magnitude (\d+\.\d+)%, L1 (\d+\.\d+)%, Taylor (\d+\.\d+)%; lr 0\.01 "
                            r"(\d+\.\d+)%; pure distillation at T 4 (\d+\.\d+)%; shift-flip (\d+\.\d+)%",
           lambda d: [100 * r["val_accuracy"] for r in d["compare"]["rows"]]),
    Figure("compress.json", r"Compute: (\d+) CPU minutes, (\d+) wall minutes \(the baseline's training (\d+) of them;",
           lambda d: [d["compute"]["total_cpu_s"] / 60, d["compute"]["total_wall_s"] / 60,
                      d["compute"]["per_stage"]["baseline"]["wall_s"] / 60]),
    Figure("runtimes.json", r"small CNN int8 (\d+\.\d+) µs on ExecuTorch vs (\d+\.\d+) µs fp32 \(ONNX Runtime int8 "
                            r"(\d+\.\d+) µs vs its fp32 (\d+\.\d+) µs; LiteRT int8 (\d+\.\d+) µs vs (\d+\.\d+) µs\)",
           lambda d: [_model(d, "convnet_16_32_64", rt, p) for rt in ("executorch", "onnxruntime", "litert")
                      for p in ("int8", "fp32")]),
    Figure("runtimes.json", r"TFLite Micro arena (\d+\.\d+)x \(small CNN\) and (\d+\.\d+)x \(MobileNetV2 0\.5\)",
           lambda d: [d["models"]["convnet_16_32_64"]["mcu"]["arena_over_liveness"],
                      d["models"]["mobilenet_v2_0.5"]["mcu"]["arena_over_liveness"]]),
    *[Figure("mlperf-tiny.json",
             rf"\| {label} \| (\d+\.\d+)% \| (\d+\.\d+) \| (\d+\.\d+) \| (\d+\.\d+) M \| (\d+\.\d+) ms \|",
             lambda d, m=model: _mlperf_row(d, m))
      for label, model in (("reference ResNet-8, 20 epochs", "reference"),
                           (r"front member 15 \(12/32/80, depth 1\)", "front-15"),
                           (r"reference compressed \(uniform 0\.7 width\)", "compressed"))],
    Figure("mlperf-tiny.json", r"member 15 is (\d+\.\d+) points below it\. The search arm used (\d[\d,]*)\s+"
           r"CPU-seconds \(parent \+ search \+ finalize\) against the reference's (\d[\d,]*)",
           lambda d: [_mlperf_row(d, "reference")[0] - _mlperf_row(d, "front-15")[0],
                      d["search_arm_cpu_s"], d["reference_arm_cpu_s"]]),
    Figure("mlperf-tiny.json", r"(\d+\.\d+)% and (\d+\.\d+)% test int8 at (\d[\d,]*) and (\d[\d,]*) CPU-seconds\. A line in "
                               r"log-compute through the two reaches 85% at about (\d[\d,]*) CPU-seconds",
           lambda d: [100 * d["search_arm_curve"][0]["test_accuracy_int8"], 100 * d["search_arm_curve"][1]["test_accuracy_int8"],
                      d["search_arm_curve"][0]["arm_cpu_s"], d["search_arm_curve"][1]["arm_cpu_s"],
                      d["targets"]["search_arm_cpu_s_for_85"]["cpu_s"]]),
    Figure("mlperf-tiny.json", r"TFLite Micro file\): (\d+\.\d+)%, (\d+\.\d+)% and (\d+\.\d+)% int8\s+at (\d+), (\d+) and "
                               r"(\d+) epochs, (\d+\.\d+)% at (\d+)\. A line in log-epochs\s+through \d+ and \d+ reaches 85% at "
                               r"about (\d+) epochs, about (\d[\d,]*) CPU-seconds at the curve runs' (\d+\.\d+) CPU-seconds per",
           lambda d: [*(100 * c["test_accuracy_int8"] for c in d["reference_curve"]),
                      *(c["epochs"] for c in d["reference_curve"]),
                      _mlperf_row(d, "reference")[0], d["budget"]["reference_epochs"],
                      d["targets"]["reference_budget_for_85"]["epochs"],
                      d["targets"]["reference_cpu_s_for_85"]["cpu_s"],
                      float(d["targets"]["reference_cpu_s_for_85"]["how"].split(" x ")[1].split()[0])]),
    Figure("mlperf-tiny.json", r"reaches (\d+\.\d+)x fewer MACs at (\d+\.\d+) points below the reference",
           lambda d: [d["targets"]["compress_2x_within_1pt"]["macs_ratio"],
                      d["targets"]["compress_2x_within_1pt"]["drop_points"]]),
    Figure("mlperf-tiny.json", r"a search candidate takes (\d+\.\d+) s \(median of (\d+) timed on a nearly idle",
           lambda d: [(e := d["targets"]["candidate_eval_le_10s_timed_alone"])["median_s"], e["trials"]]),
    Figure("mlperf-tiny.json", r"The\s+search's own trials, run loaded with the old code, took a median of (\d+\.\d+) s",
           lambda d: [d["targets"]["candidate_eval_le_10s"]["median_s"]]),
    Figure("mlperf-tiny.json", r"inherited weights took\s+(\d+\.\d+)-(\d+\.\d+) s \(median (\d+\.\d+) s; .*?\):\s+"
                               r"(\d+\.\d+)-(\d+\.\d+) s\s+profiling .*? and (\d+\.\d+)-(\d+\.\d+) s scoring",
           lambda d: [*_span(d, "wall_s", rung=0), _median(d, "wall_s", rung=0), *_span(d, "profile_s", rung=0),
                      *_span(d, "rest_s", rung=0)]),
    Figure("mlperf-tiny.json", r"fine-tuning\) took (\d+\.\d+) and (\d+\.\d+) s, (\d+\.\d+) and (\d+\.\d+) s of it training",
           lambda d: [*_span(d, "wall_s", rung=1), *_span(d, "train_s", rung=1)]),
]


def _mlperf_row(d: dict, model: str) -> list[float]:
    """test accuracy %, arena KiB, flash KiB, M MACs, predicted ms of one bench_mlperf_tiny row."""
    r = next(x for x in d["rows"] if x["model"] == model)
    return [100 * r["test_accuracy_int8_as_shipped"], r["arena_bytes"] / 1024, r["flash_bytes"] / 1024,
            r["macs"] / 1e6, r["predicted_latency_ms"]]


def _readme_text() -> str:
    return re.sub(r"\s+", " ", (REPO / "README.md").read_text())


def _agrees(quoted: str, value: float) -> bool:
    """``quoted`` (as printed: ``0.956``, ``1,611``, ``13``) is ``value`` rounded to as many decimals."""
    text = quoted.replace(",", "")
    decimals = len(text.partition(".")[2])
    return abs(float(text) - float(value)) <= 0.5 * 10 ** -decimals + 1e-9


@pytest.mark.parametrize("figure", FIGURES, ids=[f"{f.source}:{i}" for i, f in enumerate(FIGURES)])
def test_readme_figure_matches_its_results_json(figure: Figure):
    import json

    matches = list(re.finditer(figure.pattern, _readme_text()))
    assert len(matches) == 1, (
        f"README.md states this {figure.source} figure {len(matches)} times (pattern {figure.pattern!r}); "
        "a rewritten sentence needs its pattern updated in FIGURES")
    data = json.loads((RESULTS / figure.source).read_text())
    values = list(figure.values(data))
    quoted = matches[0].groups()
    assert len(values) == len(quoted)
    wrong = [f"README {q} vs {figure.source} {v:.6g}" for q, v in zip(quoted, values) if not _agrees(q, v)]
    assert not wrong, f"README.md disagrees with benchmarks/results/{figure.source}: " + "; ".join(wrong)


def test_every_results_file_the_readme_cites_is_checked():
    cited = {p.name for pattern in re.findall(r"benchmarks/results/([\w*-]+\.json)", _readme_text())
             if pattern != "*.json" for p in RESULTS.glob(pattern)}  # "*.json": the folder, not a figure
    assert cited, "the README cites no results file"
    assert cited <= {f.source for f in FIGURES}, f"cited but no figure checked: {sorted(cited - {f.source for f in FIGURES})}"


def test_figure_check_catches_a_wrong_figure():
    assert _agrees("0.956", 0.9557) and _agrees("1,611", 1610.66) and _agrees("13", 13.03)
    assert not _agrees("0.967", 0.9557) and not _agrees("0.822", 0.82146)
