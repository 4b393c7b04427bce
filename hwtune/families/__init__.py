"""Model families: a registry of builders with declared knobs.

Example:
    >>> import hwtune
    >>> hwtune.list_families()
    ['convnet', 'mobilenet_v2', 'nb201', 'resnet']
    >>> model = hwtune.create_model("nb201", {"arch": "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|nor_conv_1x1~0|none~1|avg_pool_3x3~2|"}, num_classes=10, in_channels=3, input_size=32)
"""

from __future__ import annotations

from hwtune.families._base import Knob, ModelFamily, make_divisible
from hwtune.families._registry import create_model, get_family, list_families, register_family, unregister_family

# Importing the family modules registers them.
from hwtune.families import convnet, mobilenet, nb201, resnet  # noqa: E402,F401  isort: skip

__all__ = [
    "Knob",
    "ModelFamily",
    "create_model",
    "get_family",
    "list_families",
    "make_divisible",
    "register_family",
    "unregister_family",
]
