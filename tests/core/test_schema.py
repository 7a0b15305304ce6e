"""Settings sections: one set of rules whether they come from YAML or from code."""

from dataclasses import dataclass
from typing import Literal

import pytest

from paravec.core.schema import POSITIVE, ConfigError, Section, build, field_order, narrowed, option


@dataclass(frozen=True, kw_only=True)
class Inner(Section):
    rate: float = option(0.5, POSITIVE)


@dataclass(frozen=True, kw_only=True)
class Base(Section):
    kind: Literal["a", "b"] = "a"
    size: int = option(2, POSITIVE)


@dataclass(frozen=True, kw_only=True)
class Extended(Base):
    name: str = option(rule=None)
    inner: Inner = option(Inner)


def test_direct_construction_is_checked_like_yaml():
    assert Inner(rate=1).rate == 1.0 and isinstance(Inner(rate=1).rate, float)
    with pytest.raises(ConfigError, match=r"Inner: rate: got 0.0 \(float\), expected a value greater than 0"):
        Inner(rate=0)
    with pytest.raises(ConfigError, match="kind: got 'c'"):
        Extended(name="x", kind="c")
    assert Extended(name="x", inner={"rate": 2}).inner == Inner(rate=2.0)
    with pytest.raises(ConfigError, match="inner: got 3 .* expected a Inner"):
        Extended(name="x", inner=3)


def test_build_reports_every_problem_with_dotted_keys():
    problems = []
    assert build(Extended, {"kind": "z", "inner": {"rate": -1, "speed": 2}}, "section", problems) is None
    texts = [problem.text for problem in problems]
    assert any(text.startswith("section.kind: got 'z'") for text in texts)
    assert any(text.startswith("section.inner.rate: got -1") for text in texts)
    assert any("section.inner.speed: unknown key" in text for text in texts)
    assert any(text == "section.name: missing (required)" for text in texts)


def test_an_extension_lists_its_own_values_first_and_narrows_back():
    assert [spec.name for spec in field_order(Extended)] == ["name", "kind", "size", "inner"]
    assert list(Extended(name="x").to_dict()) == ["name", "kind", "size", "inner"]
    assert narrowed(Extended(name="x", size=5), Base) == Base(size=5)
    with pytest.raises(TypeError):
        narrowed(Base(), Extended)
