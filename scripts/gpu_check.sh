#!/usr/bin/env bash
# The CUDA training path end to end, for the day a GPU is at hand (about 2-5 minutes):
#   1. epochs/s of parent training (sandwich rule) of the fashion-resnet parent, CPU vs CUDA (fp32 and AMP),
#      on random 1x28x28 images (throughput does not depend on the pixels);
#   2. a tiny `hwtune tune --train-device cuda` on a generated ImageFolder, `finalize --train-device cuda`,
#      `export` (the model still exported, quantized and scored on the CPU), and a check that the manifest
#      says it trained on cuda;
#   3. the CUDA-marked tests (pytest -m cuda).
# Exits non-zero on any failure.   Usage: scripts/gpu_check.sh [PYTHON]
# GPU_CHECK_DEVICE=cpu runs the same steps on the CPU only (a dry run of the script itself).
set -euo pipefail
PY="${1:-${PYTHON:-python3}}"
DEV="${GPU_CHECK_DEVICE:-cuda}"
export DEV
cd "$(dirname "$0")/.."
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

"$PY" - <<'PYEOF'
import os
import torch
if os.environ["DEV"] == "cpu":
    raise SystemExit(0)
if not torch.cuda.is_available():
    raise SystemExit("gpu_check: CUDA is not available on this machine (torch %s)" % torch.__version__)
print(f"gpu_check: torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
PYEOF

echo "== 1. parent training throughput (fashion-resnet parent, sandwich rule, batch 128)"
"$PY" - <<'PYEOF'
import os
import torch
from hwtune.space import SearchSpace
from hwtune.supernet import train_parent

space = SearchSpace.from_recipe("fashion-resnet")
runs = [("cpu", "off", 0.125)]
if os.environ["DEV"] != "cpu":
    runs += [(os.environ["DEV"], "off", 1.0), (os.environ["DEV"], "auto", 1.0)]
n = 4096
x, y = torch.randn(n, 1, 28, 28), torch.randint(0, 10, (n,))
ds = torch.utils.data.TensorDataset(x, y)
rows = []
for dev, amp, epochs in runs:
    if dev != "cpu":
        train_parent(space, ds, epochs=0.05, train_device=dev, amp=amp)  # warm-up (cuDNN autotune, allocator)
    _, st = train_parent(space, ds, epochs=epochs, train_device=dev, amp=amp)
    per_s = st.samples_seen / st.seconds
    rows.append((st.device, st.amp, per_s))
    print(f"  {st.device:<40} {st.amp:<5} {per_s:9.0f} images/s  = {per_s / 60000:.4f} Fashion-MNIST epochs/s")
cpu = rows[0][2]
for device, amp, per_s in rows[1:]:
    print(f"  {device} {amp}: {per_s / cpu:.1f}x the CPU ({torch.get_num_threads()} threads)")
PYEOF

echo "== 2. tiny tune / finalize / export with --train-device $DEV"
"$PY" - "$WORK" <<'PYEOF'
import sys
from pathlib import Path
import numpy as np
from PIL import Image

root = Path(sys.argv[1]) / "data"
rng = np.random.default_rng(0)
for split, per_class in (("train", 40), ("test", 10)):
    for c in range(10):
        d = root / split / f"class{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (28, 28), dtype=np.uint8)
            img[2 * c : 2 * c + 6, 4:24] = 220  # a class-dependent bar: learnable in a few steps
            Image.fromarray(img).save(d / f"{i}.png")
(Path(sys.argv[1]) / "tiny.toml").write_text("""schema_version = 1
family = "convnet"
dataset = "fashion-mnist"
[input]
channels = 1
size = 28
classes = 10
[knobs]
stem_stride = 2
stem_width = [4, 8]
width = [[4, 8], [8, 16]]
depth = 1
kernel_size = 3
[precision]
choices = ["fp32", "int8"]
[train]
epochs = 1.0
batch_size = 32
""")
PYEOF
"$PY" -m hwtune tune "$WORK/tiny.toml" --device host --data "$WORK/data" --trials 3 --epochs 2 --rungs 1 \
    --seed 0 --out "$WORK/run" --train-device "$DEV" -q
"$PY" -m hwtune finalize "$WORK/run" --data "$WORK/data" --epochs 2 --train-device "$DEV" -q
"$PY" -m hwtune export "$WORK/run" --data "$WORK/data" -o "$WORK/export" --json > "$WORK/manifest.json"
"$PY" - "$WORK/manifest.json" <<'PYEOF'
import json, os, sys
m = json.load(open(sys.argv[1]))
on = m["training"]["trained_on"]
print(f"  exported {m.get('precision')} model, val accuracy {m.get('val_accuracy')}, trained on {on}")
if not str(on).startswith(os.environ["DEV"].split(":")[0]):
    raise SystemExit(f"gpu_check: the manifest says trained on {on!r}, expected {os.environ['DEV']}")
PYEOF

echo "== 3. CUDA tests"
[ "$DEV" = cpu ] || "$PY" -m pytest -q -m cuda tests/test_engine.py tests/test_cli_train_device.py -p no:cacheprovider
echo "gpu_check: OK"
