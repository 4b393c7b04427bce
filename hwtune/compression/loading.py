"""Load a user's trained model safely, and check it fits the task before any trial runs.

Model specs (``load_user_model``):

- ``path/to/file.py:factory`` — a function in a Python file that returns the ``nn.Module``;
- ``package.module:factory`` — the same, from an importable module;
- ``torchvision:<builder>`` — a torchvision model builder (``kwargs`` such as ``num_classes``
  are passed on; torchvision's pretrained ``weights=`` are never downloaded);
- ``model.pt2`` — a ``torch.export`` archive (``torch.export.load(...).module()``, its aten
  conv / batch-norm / linear calls turned back into layers so they can be pruned; residual
  blocks cannot be dropped in it: the graph has no block modules).

Weights (``weights=``) are a state dict in ``.pt`` / ``.pth`` (read with
``torch.load(weights_only=True)``; a ``{"state_dict": ...}`` checkpoint is accepted) or
``.safetensors``. Whole pickled objects are never unpickled: a ``.pt`` holding a pickled model
is refused, and a ``.pt2`` archive is read with torch's weights-only loader forced on and refused
if it holds pickled custom objects. Python files and modules *are* executed: they are the user's
own code, named on purpose.

Every failure is one line naming the file or spec and what was expected (``ModelError`` or
``ConfigError``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import re
import sys
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hwtune._io import check_zip_sizes
from hwtune._util import first_line
from hwtune.errors import ConfigError, ModelError, UnknownNameError, did_you_mean

__all__ = ["check_model", "check_torchvision_builder", "load_user_model", "load_weights", "read_state_dict", "state_sha256"]

TORCHVISION_PREFIX = "torchvision:"
STATE_DICT_SUFFIXES = (".pt", ".pth")
SPEC_FORMS = "path/to/file.py:factory, package.module:factory, torchvision:<builder> or a .pt2 archive"
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _short(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" ... ({len(names)} in all)" if len(names) > n else "")


# --------------------------------------------------------------------------------------------
# Models


def load_user_model(
    spec: str | Path, *, weights: str | Path | None = None, kwargs: Mapping[str, Any] | None = None
) -> nn.Module:
    """Build the user's model from ``spec`` and load ``weights`` into it.

    Args:
        spec: One of the forms in the module docstring.
        weights: A ``.pt``/``.pth`` state dict or a ``.safetensors`` file (not for ``.pt2``).
        kwargs: Keyword arguments for the factory / torchvision builder (``{"num_classes": 10}``).

    Returns:
        The model, in eval mode.

    Raises:
        ConfigError: a malformed spec or an unknown weights format.
        UnknownNameError: an unknown torchvision builder (close names suggested).
        ModelError: a missing or unreadable file, a missing factory, a factory that fails or
            returns something else than an ``nn.Module``, weights that do not fit.

    Example:
        >>> m = load_user_model("torchvision:resnet18", kwargs={"num_classes": 10})  # doctest: +SKIP
        >>> m = load_user_model("models/net.py:build", weights="net.safetensors")      # doctest: +SKIP
    """
    text = str(spec).strip()
    kwargs = dict(kwargs or {})
    if text.endswith(".pt2") and ":" not in Path(text).name:
        if weights is not None:
            raise ConfigError(
                f"{text}: a torch.export archive carries its own weights; do not pass weights={weights!s}"
            )
        if kwargs:
            raise ConfigError(f"{text}: a torch.export archive takes no factory arguments, got {sorted(kwargs)}")
        model = _load_export_archive(Path(text))
    elif text.startswith(TORCHVISION_PREFIX):
        model = _torchvision_model(text[len(TORCHVISION_PREFIX) :], kwargs)
    else:
        source, sep, factory = text.rpartition(":")
        if not sep or not source or not factory.isidentifier():
            raise ConfigError(f"model spec {text!r} must be {SPEC_FORMS}")
        if source.endswith(".py"):
            module = _import_file(Path(source))
        elif _DOTTED.fullmatch(source):
            module = _import_module(source)
        else:
            raise ConfigError(f"model spec {text!r} must be {SPEC_FORMS}")
        model = _call_factory(text, module, factory, kwargs)
    if weights is not None:
        load_weights(model, weights)
    return model.eval()


@contextlib.contextmanager
def _sys_path(directory: Path) -> Iterator[None]:
    """The user's file may import its neighbours."""
    sys.path.insert(0, str(directory))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(directory))


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    resolved = path.resolve()
    name = "hwtune_user_model_" + hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise ModelError(f"{path}: cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and typing look their module up here
    try:
        with _sys_path(resolved.parent):
            spec.loader.exec_module(module)
    except Exception as exc:  # user code: any exception type
        sys.modules.pop(name, None)
        raise ModelError(f"{path}: importing it failed: {type(exc).__name__}: {first_line(exc)}") from exc
    return module


def _import_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception as exc:  # ImportError, or anything the module raises at import
        raise ModelError(f"cannot import module {name!r}: {type(exc).__name__}: {first_line(exc)}") from exc


def _call_factory(spec: str, module: Any, factory: str, kwargs: Mapping[str, Any]) -> nn.Module:
    fn = getattr(module, factory, None)
    if fn is None:
        public = [n for n in vars(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise ModelError(
            f"{spec}: {getattr(module, '__file__', module.__name__)} has no function {factory!r}"
            f"{did_you_mean(factory, public)} (defines: {_short(sorted(public), 6) or 'nothing callable'})"
        )
    if not callable(fn):
        raise ModelError(f"{spec}: {factory!r} is a {type(fn).__name__}, not a function returning the model")
    try:
        model = fn(**kwargs)
    except Exception as exc:  # user code
        raise ModelError(f"{spec}: calling {factory}() failed: {type(exc).__name__}: {first_line(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"{spec}: {factory}() returned a {type(model).__name__}, expected a torch.nn.Module")
    return model


def check_torchvision_builder(builder: str) -> None:
    """Raise ``UnknownNameError`` (close names suggested) unless ``builder`` is a ``torchvision.models`` builder."""
    import torchvision

    names = torchvision.models.list_models()
    if builder not in names:
        raise UnknownNameError(
            f"unknown torchvision builder {builder!r}{did_you_mean(builder, names)} (torchvision.models.list_models())"
        )


def _torchvision_model(builder: str, kwargs: Mapping[str, Any]) -> nn.Module:
    import torchvision

    check_torchvision_builder(builder)
    if "weights" in kwargs:
        raise ConfigError("torchvision builders are called with weights=None; pass trained weights as a file instead")
    try:
        return torchvision.models.get_model(builder, weights=None, **kwargs)
    except Exception as exc:  # bad kwargs: TypeError / ValueError from the builder
        raise ConfigError(
            f"torchvision:{builder} with {dict(kwargs)}: {type(exc).__name__}: {first_line(exc)}"
        ) from exc


@contextlib.contextmanager
def _weights_only_forced() -> Iterator[None]:
    """torch.export.load falls back to full unpickling for some payloads; forbid it."""
    old = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = old


def _load_export_archive(path: Path) -> nn.Module:
    from torch.export.pt2_archive import constants as pt2

    if not path.is_file():
        raise ModelError(f"{path}: torch.export archive not found")
    # sizes first: a crafted archive must not make the load allocate what its members claim
    members = check_zip_sizes(path, what="torch.export archive", error=ModelError)
    pickled = [
        m for m in members if Path(m).name.startswith((pt2.CUSTOM_OBJ_FILENAME_PREFIX, pt2.OPAQUE_OBJ_FILENAME_PREFIX))
    ]
    if pickled:
        raise ModelError(
            f"{path}: refused: the archive holds pickled objects ({_short(pickled)}), which hwtune never unpickles"
        )
    try:
        with _weights_only_forced():
            program = torch.export.load(str(path))
        # No input guards: they pin the batch size the archive was exported with (training and
        # evaluation use other batch sizes); export with a dynamic batch dimension.
        module = program.module(check_guards=False)
    except Exception as exc:  # torch raises many types for a bad archive
        raise ModelError(
            f"{path}: cannot load the torch.export archive: {type(exc).__name__}: {first_line(exc)}"
        ) from exc
    from hwtune.compression._layers_from_graph import restore_layers

    restore_layers(module)
    from hwtune.compression._scopes import ScopedGraph

    # Over the same graph and tensors (the exported module refuses train()/eval()); a one-input model
    # runs each operation inside the module calls it was traced in, so exporters see its module names.
    gm = torch.fx.GraphModule(module, module.graph, class_name="ExportedModel")
    if sum(1 for n in gm.graph.nodes if n.op == "placeholder") == 1:
        return ScopedGraph(gm)
    return gm


# --------------------------------------------------------------------------------------------
# Weights


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.pt``/``.pth`` (weights only) or ``.safetensors``.

    A checkpoint ``{"state_dict": {...}, ...}`` gives its ``state_dict``; a ``module.`` prefix on
    every key (``nn.DataParallel``) is removed.

    Raises:
        ConfigError: unknown file suffix.
        ModelError: missing file, garbage, a pickled object, or not a mapping of tensors.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (*STATE_DICT_SUFFIXES, ".safetensors"):
        raise ConfigError(
            f"{path}: unknown weights format {suffix or '(no suffix)'!r}; expected .pt, .pth or .safetensors"
        )
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found")
    if suffix == ".safetensors":
        state = _read_safetensors(path)
    else:
        state = _read_torch(path)
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if (
        not isinstance(state, Mapping)
        or not state
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise ModelError(
            f"{path}: expected a state dict (parameter names -> tensors), got {type(state).__name__}"
            + (f" with keys {_short([str(k) for k in state])}" if isinstance(state, Mapping) else "")
        )
    state = dict(state)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _read_torch(path: Path) -> Any:
    import pickle

    if zipfile.is_zipfile(path):  # torch's format since 1.6 (the legacy one is a bare pickle stream)
        check_zip_sizes(path, what="PyTorch weights file", error=ModelError)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found is None:  # not a pickle of allowed types at all: garbage or another format
            detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
            what = detail.group(1).strip() if detail else first_line(exc)
            raise ModelError(f"{path}: not a PyTorch weights file (UnpicklingError: {what})") from exc
        raise ModelError(
            f"{path}: refused: not a plain state dict (it pickles {found.group(1)}); hwtune loads weights only "
            "(torch.load(weights_only=True)): save model.state_dict() instead"
        ) from exc
    except Exception as exc:  # RuntimeError / EOFError / ... for garbage
        raise ModelError(f"{path}: not a PyTorch weights file ({type(exc).__name__}: {first_line(exc)})") from exc


def _read_safetensors(path: Path) -> Any:
    try:
        from safetensors.torch import load_file
    except ImportError as exc:
        raise ModelError(
            f"{path}: reading .safetensors needs the 'safetensors' package (pip install safetensors)"
        ) from exc
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError and friends
        raise ModelError(f"{path}: not a safetensors file ({type(exc).__name__}: {first_line(exc)})") from exc


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a state dict file into ``model`` (strict: same keys, same shapes) and return it.

    Raises:
        ModelError: unreadable file, or keys/shapes that differ (named in the message).
    """
    state = read_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_short(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_short(unexpected)})")
    if shapes:
        k = shapes[0]
        parts.append(
            f"{len(shapes)} of another shape (first: {k} is {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model)"
        )
    if parts:
        raise ModelError(f"{path}: weights do not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
    return model


def state_sha256(model: nn.Module) -> str:
    """SHA-256 of the model's state dict (names, shapes, dtypes, bytes): the parent's identity."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Checks


def check_model(model: nn.Module, example_input: torch.Tensor, num_classes: int) -> None:
    """Reject a model that does not run on ``example_input`` or whose output is not ``(batch, num_classes)``.

    Runs one forward pass in eval mode without gradients (the mode is restored).

    Raises:
        ModelError: one line with the input shape, the output shape and what was expected.
    """
    name = type(model).__name__
    shape = tuple(example_input.shape)
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(example_input)
    except Exception as exc:  # user code
        raise ModelError(
            f"{name} does not run on an input of shape {shape}: {type(exc).__name__}: {first_line(exc)}"
        ) from exc
    finally:
        model.train(was_training)
    expected = (shape[0], num_classes)
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"{name} returns a {type(out).__name__}, expected a logits tensor of shape {expected}")
    if tuple(out.shape) != expected:
        raise ModelError(
            f"{name} output has shape {tuple(out.shape)} for an input of shape {shape}, expected {expected} "
            f"(batch, classes): does its classifier match the data's {num_classes} classes?"
        )
