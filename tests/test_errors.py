"""hwtune.errors: the classes every loader raises."""

from __future__ import annotations

from hwtune.errors import CalibrationError, ConfigError, DataError, ExportError, HwtuneError, StudyError


def test_every_loader_error_is_a_hwtune_error():
    """The error classes the loaders raise are HwtuneErrors, so the CLI prints them as one line."""
    for cls in (ConfigError, DataError, CalibrationError, ExportError, StudyError):
        assert issubclass(cls, HwtuneError)


def test_unknown_key_problems_one_line_per_unknown_key_in_given_order():
    from hwtune.errors import unknown_key_problems

    given = {"epoch": 1, "seed": 0, "zzz": 2}
    assert unknown_key_problems(given, ("epochs", "seed"), "r.toml") == [
        "r.toml: unknown key 'epoch'; did you mean 'epochs'?",
        "r.toml: unknown key 'zzz'",
    ]
    assert unknown_key_problems(given, ("epochs", "seed", "zzz")) == ["unknown key 'epoch'; did you mean 'epochs'?"]
    assert unknown_key_problems(["sise"], ("size",), "r.toml", prefix="input.") == [
        "r.toml: unknown key 'input.sise'; did you mean 'size'?"
    ]
    assert unknown_key_problems(["widht"], {"width": 1}, what="parameter") == [
        "unknown parameter 'widht'; did you mean 'width'?"
    ]
    assert unknown_key_problems(["seed"], ("seed",), "r.toml") == []


def test_reject_unknown_keys_raises_once_with_every_problem():
    import pytest

    from hwtune.errors import reject_unknown_keys

    reject_unknown_keys({"seed": 1}, ("seed",), "budget")  # nothing unknown: no error
    with pytest.raises(ConfigError) as exc:
        reject_unknown_keys({"epoch": 1, "rung": 2}, ("epochs", "rungs"), "budget")
    assert str(exc.value).splitlines() == [
        "budget: unknown key 'epoch'; did you mean 'epochs'?",
        "budget: unknown key 'rung'; did you mean 'rungs'?",
    ]
    with pytest.raises(StudyError, match="^x: unknown key 'a'; x: unknown key 'b'$"):
        reject_unknown_keys(["a", "b"], (), "x", sep="; ", error=StudyError)
