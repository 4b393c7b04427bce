"""Model families: a registry of builders, each declaring its knobs and their legal values.

Built-in families (``hwtune list-families``):

- ``convnet``: plain CNN; per stage ``width``, ``depth``, ``kernel_size``; ``stem_width``, ``stem_stride``.
- ``mobilenet_v2``: 7 inverted-residual stages; ``width_mult``; per stage ``depth``, ``expand_ratio``,
  ``kernel_size``; ``last_channel``.
- ``resnet``: basic blocks; per stage ``width``, ``depth``.
- ``nb201``: NAS-Bench-201 cell network; ``arch`` (cell string), ``channels``, ``cells_per_stage``.

Every model's top-level children are ``stem``, ``stages`` (``stages.0`` is stage 1) and ``head``;
``get_family(name).stage_prefixes(candidate)`` maps stage names to these module prefixes.

Example:
    >>> import hwtune
    >>> hwtune.list_families()
    ['convnet', 'mobilenet_v2', 'nb201', 'resnet']
    >>> arch = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|nor_conv_1x1~0|none~1|avg_pool_3x3~2|"
    >>> model = hwtune.create_model("nb201", {"arch": arch}, num_classes=10, in_channels=3, input_size=32)
    >>> [name for name, _ in model.named_children()]
    ['stem', 'stages', 'head']
"""

from __future__ import annotations

from hwtune.families._base import CellWiring, Knob, KnobsInput, ModelFamily, WiredCell, make_divisible
from hwtune.families._registry import create_model, get_family, list_families, register_family, unregister_family

# Importing the family modules registers them.
from hwtune.families import convnet, mobilenet, nb201, resnet  # noqa: F401  isort: skip

__all__ = [
    "CellWiring",
    "Knob",
    "KnobsInput",
    "ModelFamily",
    "WiredCell",
    "create_model",
    "get_family",
    "list_families",
    "make_divisible",
    "register_family",
    "unregister_family",
]
