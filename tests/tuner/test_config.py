"""Settings objects of a search: the weight strategy (``Strategy``) next to ``Constraints`` and ``Schedule``."""

from __future__ import annotations

import pytest

from hwtune.errors import ConfigError
from hwtune.tuner import Strategy, tune


def test_strategy_from_a_name_an_object_and_the_flat_keyword() -> None:
    assert Strategy.coerce(None) == Strategy()
    assert Strategy.coerce("inherit", parent_epochs=2.0) == Strategy("inherit", parent_epochs=2.0)
    assert Strategy.coerce(Strategy("inherit", parent_epochs=5.0), parent_epochs=2.0).parent_epochs == 2.0
    s = Strategy("compress", source_model={"sha256": "ab", "class": "Net"})
    assert Strategy.from_dict(s.to_dict()) == s


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"name": "clone"}, "strategy must be one of scratch, inherit, got 'clone'"),
        ({"parent_epochs": 0}, "parent_epochs must be a number > 0, got 0"),
        ({"source_model": "net.pt"}, "source_model must be a mapping, got str"),
    ],
)
def test_bad_strategy_settings_are_one_line_errors(value: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        Strategy(**value)
    assert str(err.value) == message


def test_tune_refuses_bad_strategy_settings_before_any_work(tmp_path) -> None:
    for kw in ({"strategy": "clone"}, {"strategy": "inherit", "parent_epochs": -1}, {"strategy": 3}):
        with pytest.raises(ConfigError):
            tune("fashion-convnet", out_dir=tmp_path / "run", progress=False, **kw)
        assert not (tmp_path / "run").exists()
