#!/usr/bin/env bash
# Set up hwtune in ./.venv on a fresh Debian/Ubuntu machine with Python >= 3.11.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Fashion-MNIST, the demo's and tests' real data, ships as a Debian package (gzip IDX files
# under /usr/share/datasets/fashion-mnist). Nothing is downloaded at test time.
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist
    else
        echo "setup: apt-get not found; install Fashion-MNIST yourself and set HWTUNE_DATA to its directory" >&2
    fi
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch/torchvision are declared as ranges in pyproject.toml; a local pip configuration (if any)
# pins them to the wheels on disk.
.venv/bin/python -m pip install --quiet -e '.[test]'
.venv/bin/python -c "import hwtune, torch, onnxruntime, optuna; print('hwtune', hwtune.__version__, '| torch', torch.__version__, '| onnxruntime', onnxruntime.__version__, '| optuna', optuna.__version__)"
