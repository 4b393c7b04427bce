#!/usr/bin/env python3
"""Run the per-device micro-benchmark suite: this is ``python -m hwtune.device_script``.

The script now ships inside the package as ``hwtune/device_script.py`` (one self-contained file:
numpy + onnxruntime, plus onnx to build the models; no torch, no hwtune import). This wrapper keeps
``python scripts/profile_device.py ...`` working in a source checkout, and re-exports the module's
names for code that loads this file. On a device, copy ``hwtune/device_script.py`` itself.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parent.parent / "hwtune" / "device_script.py"
if not _PATH.is_file():
    sys.exit(f"{__file__}: {_PATH} not found; copy hwtune/device_script.py to the device and run that file instead")
_spec = importlib.util.spec_from_file_location("hwtune_device_script", _PATH)
if _spec is None or _spec.loader is None:
    sys.exit(f"{__file__}: cannot load {_PATH}")
_module = importlib.util.module_from_spec(_spec)
sys.modules.setdefault(_spec.name, _module)
_spec.loader.exec_module(_module)
globals().update({k: v for k, v in vars(_module).items() if not k.startswith("__")})

if __name__ == "__main__":
    sys.exit(_module.main())
