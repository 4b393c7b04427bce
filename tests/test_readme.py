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
     ".venv/bin/hwtune demo --timeout 120 --trials 3 --out {scratch}/hwtune-demo",
     "the demo searches for 330 s; two minutes and 3 trials take the same path (parent, search, finalize, export)"),
    ("README.md", ".venv/bin/python -m pytest -q",
     ".venv/bin/python -m pytest -q --collect-only",
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
    ("README.pypi.md", "~/hwtune-env", "{shared}/hwtune-env",
     "the same fresh environment as README.md's (installing into it again only adds what is missing)"),
    ("README.pypi.md", "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu",
     f"pip install {CPU_TORCH_WHEEL} {CPU_TORCHVISION}", "as for README.md"),
    ("README.pypi.md", "pip install hwtune-0.1.0-py3-none-any.whl ",
     "pip wheel --quiet --no-deps {repo} -w {shared}/dist && pip install {shared}/dist/hwtune-0.1.0-py3-none-any.whl ",
     "a pip user has the wheel; the test builds it from the checkout first"),
    ("README.pypi.md", "hwtune demo ", "hwtune demo --timeout 120 --trials 3 -o {scratch}/hwtune-demo ",
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
    assert "bash scripts/setup.sh && .venv/bin/python -m pytest -q\n" in first.code


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
