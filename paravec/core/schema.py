"""Typed settings: frozen dataclasses are the schema, and one loader reads every tree of them.

Each component of paravec declares its own settings as a :class:`Section` (a frozen dataclass
whose fields may carry a range :class:`Rule` through :func:`option`): the backbone options, the
prefix paths, the MIM estimator, UniME's hard negatives... A run configuration is a tree of such
sections, and :func:`build` reads a nested mapping (as YAML gives it) into one, reporting every
problem at once with the full dotted key:

- unknown keys, with the closest valid key and the valid keys of that section;
- values of the wrong type or out of range, naming the key, the value and what is expected;
- missing required keys (inside missing sections too).

A section constructed directly in code is checked the same way (:meth:`Section.__post_init__`),
so a setting has one set of rules whichever way it arrives.

YAML rules (:func:`parse_yaml`): numbers such as ``1e-4`` are floats (plain PyYAML follows
YAML 1.1 and reads them as strings), and only ``true``/``false`` are booleans (YAML 1.1 also
turns ``no``, ``off`` and ``yes`` into booleans, which would break ``mixed_precision: no``).
``base: other.yaml`` starts from another file and deep-merges this one over it
(:func:`read_yaml_tree`); ``KEY=VALUE`` overrides follow the same value rules
(:func:`apply_override`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence, Union, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """Settings that cannot be used; the message names every offending key."""


# --------------------------------------------------------------------------------------------
# Rules and sections
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A check on a value that already has the right type. ``expected`` may be computed late
    (e.g. the names of whatever is registered when the check runs)."""

    holds: Callable[[Any], bool]
    expected: Union[str, Callable[[], str]]

    def describe(self) -> str:
        return self.expected() if callable(self.expected) else self.expected


POSITIVE = Rule(lambda v: v > 0, "a value greater than 0")
NON_NEGATIVE = Rule(lambda v: v >= 0, "a non-negative value (0 or more)")
FRACTION = Rule(lambda v: 0 <= v < 1, "a value in [0, 1)")
NON_EMPTY = Rule(lambda v: len(v) > 0, "a non-empty value")


def option(default: Any = dataclasses.MISSING, rule: Rule | None = None) -> Any:
    """A dataclass field with an optional range rule; list and section defaults are copied."""
    metadata = {"rule": rule} if rule is not None else {}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    if isinstance(default, type) and dataclasses.is_dataclass(default):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Problem:
    key: str
    text: str


class Section:
    """Base of every settings dataclass: its fields are checked (and ints widened to floats)
    when it is constructed, by the same rules :func:`build` applies to YAML."""

    def __post_init__(self) -> None:
        problems: list[Problem] = []
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            hint = _hints(type(self))[spec.name]
            if _is_section(hint):
                if isinstance(value, Mapping):
                    value = build(hint, dict(value), spec.name, problems)
                    if value is not None:
                        object.__setattr__(self, spec.name, value)
                elif not isinstance(value, hint):
                    problems.append(Problem(spec.name, f"{spec.name}: got {_show(value)}, expected a {hint.__name__}"))
                continue
            checked = _checked_value(spec, hint, value, spec.name, problems)
            if checked is not _INVALID and checked is not value:
                object.__setattr__(self, spec.name, checked)
        if problems:
            raise ConfigError(f"{type(self).__name__}: " + "; ".join(problem.text for problem in problems))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts and lists (what a YAML file holds), keys in :func:`field_order`."""
        return {spec.name: _plain(getattr(self, spec.name)) for spec in field_order(type(self))}


def narrowed(instance: Section, cls: type) -> Any:
    """The ``cls`` part of a section that extends ``cls`` (e.g. the paths settings of a run's
    ``method`` section), as a ``cls`` instance."""
    if not isinstance(instance, cls):
        raise TypeError(f"{type(instance).__name__} does not extend {cls.__name__}")
    return cls(**{spec.name: getattr(instance, spec.name) for spec in dataclasses.fields(cls)})


def field_order(cls: type) -> list[dataclasses.Field]:
    """A section's fields as a reader wants them: its own values, then inherited ones, then
    subsections (a section extending another names what it adds first)."""
    hints = _hints(cls)
    own_names = set(cls.__dict__.get("__annotations__", {}))
    every = dataclasses.fields(cls)
    values = [spec for spec in every if not _is_section(hints[spec.name])]
    return ([spec for spec in values if spec.name in own_names] + [spec for spec in values if spec.name not in own_names]
            + [spec for spec in every if _is_section(hints[spec.name])])


def _plain(value: Any) -> Any:
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _hints(cls: type) -> dict[str, Any]:
    cached = cls.__dict__.get("_paravec_hints")
    if cached is None:
        cached = get_type_hints(cls)
        setattr(cls, "_paravec_hints", cached)
    return cached


def _is_section(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


_INVALID = object()


def _checked_value(spec: dataclasses.Field, hint: Any, value: Any, key: str, problems: list[Problem]) -> Any:
    try:
        value = _coerce(value, hint)
    except _Mismatch as mismatch:
        problems.append(Problem(key, f"{key}: got {_show(value)}, expected {mismatch.expected}"))
        return _INVALID
    rule = spec.metadata.get("rule")
    if rule is not None and value is not None and not rule.holds(value):
        problems.append(Problem(key, f"{key}: got {_show(value)}, expected {rule.describe()}"))
        return _INVALID
    return value


# --------------------------------------------------------------------------------------------
# Building a tree from a mapping
# --------------------------------------------------------------------------------------------


def build(cls: type, raw: Any, prefix: str, problems: list[Problem]) -> Any:
    """Check ``raw`` against dataclass ``cls``; the instance, or None if a problem was found
    (appended to ``problems``, keys prefixed with ``prefix``)."""
    where = prefix or "the config"
    if raw is None and prefix:  # a section whose keys are all commented out
        raw = {}
    if not isinstance(raw, dict):
        problems.append(Problem(prefix, f"{where}: got {_show(raw)}, expected a mapping of keys"))
        return None
    before = len(problems)
    hints = _hints(cls)
    names = [f.name for f in field_order(cls)]
    for key in raw:
        if key not in names:
            problems.append(_unknown_key(str(key), names, prefix))
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(cls):
        key = f"{prefix}.{spec.name}" if prefix else spec.name
        hint = hints[spec.name]
        if spec.name not in raw:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                if _is_section(hint):  # report the missing keys inside it, not just the section
                    values[spec.name] = build(hint, {}, key, problems)
                else:
                    problems.append(Problem(key, f"{key}: missing (required)"))
            continue
        if _is_section(hint):
            values[spec.name] = build(hint, raw[spec.name], key, problems)
            continue
        value = _checked_value(spec, hint, raw[spec.name], key, problems)
        if value is not _INVALID:
            values[spec.name] = value
    return cls(**values) if len(problems) == before else None


def validate(cls: type, raw: Mapping[str, Any], source: str, *, overridden_keys: Sequence[str] = (),
             contradictions: Callable[[Any], list[tuple[str, str]]] = lambda _: []) -> Any:
    """:func:`build` the whole tree, then check ``contradictions`` (settings valid one by one
    that cannot go together, as ``(key, text)``); raise one :class:`ConfigError` listing every
    problem, each marked when its key came from an override."""
    problems: list[Problem] = []
    instance = build(cls, dict(raw), "", problems)
    if instance is not None:
        problems.extend(Problem(key, f"{key}: {text}") for key, text in contradictions(instance))
    if problems:
        lines = []
        for problem in problems:
            from_set = any(problem.key == k or problem.key.startswith(k + ".") for k in overridden_keys)
            lines.append(f"{problem.text}{' (from --set)' if from_set else ''}")
        count = f"{len(lines)} problem{'s' if len(lines) > 1 else ''}"
        raise ConfigError(f"invalid config {source}: {count}:\n  - " + "\n  - ".join(lines))
    return instance


def _unknown_key(key: str, valid: list[str], prefix: str) -> Problem:
    dotted = f"{prefix}.{key}" if prefix else key
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f"; did you mean '{prefix + '.' if prefix else ''}{close[0]}'?" if close else ""
    section = f"section {prefix}" if prefix else "the top level"
    return Problem(dotted, f"{dotted}: unknown key{hint} (valid keys of {section}: {', '.join(valid)})")


class _Mismatch(Exception):
    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` as type ``hint`` (ints widen to floats, tuples read as lists); raises _Mismatch."""
    origin = get_origin(hint)
    if origin is Literal:
        if isinstance(value, str) and value in get_args(hint):
            return value
        raise _Mismatch(_describe(hint))
    if origin in (Union, types.UnionType):
        for choice in get_args(hint):
            try:
                return _coerce(value, choice)
            except _Mismatch:
                continue
        raise _Mismatch(_describe(hint))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch(_describe(hint))
        (item_hint,) = get_args(hint)
        try:
            coerced = [_coerce(item, item_hint) for item in value]
        except _Mismatch:
            raise _Mismatch(_describe(hint)) from None
        return value if isinstance(value, list) and coerced == value else coerced
    if hint is type(None):
        if value is None:
            return None
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return value if isinstance(value, float) else float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"settings schema uses an unsupported type: {hint!r}")
    raise _Mismatch(_describe(hint))


def _describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(choice) for choice in get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(choice) for choice in get_args(hint))
    if origin is list:
        return f"a list of {_describe(get_args(hint)[0]).removeprefix('a ').removeprefix('an ')}s"
    return {type(None): "null", bool: "true or false", int: "an integer", float: "a finite number",
            str: "a string"}[hint]


def _show(value: Any) -> str:
    kind = "null" if value is None else type(value).__name__
    return f"{value!r} ({kind})"


# --------------------------------------------------------------------------------------------
# YAML
# --------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader reading ``1e-4`` as a float and only true/false as booleans."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 -- _Loader is a SafeLoader


def dump_yaml(data: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False)


def read_yaml_tree(path: Path) -> dict[str, Any]:
    """The mapping in ``path`` with its ``base:`` chain merged under it (cycles are errors)."""
    return _read_with_bases(Path(path), chain=())


def _read_yaml_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error}") from None
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{path}: expected a mapping of config sections, got {kind}")
    return data


def _read_with_bases(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    data = _read_yaml_mapping(path)
    if "base" not in data:
        return data
    base = data.pop("base")
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: base: expected the path of another config file, got {base!r}")
    base_path = path.parent / base
    here = path.resolve()
    if base_path.resolve() in (*chain, here):
        cycle = " -> ".join(str(p) for p in (*chain, here, base_path.resolve()))
        raise ConfigError(f"{path}: base: include cycle: {cycle}")
    if not base_path.is_file():
        raise ConfigError(f"{path}: base: {base_path} is not a file")
    return deep_merge(_read_with_bases(base_path, (*chain, here)), data)


def deep_merge(under: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``under``: mappings merge key by key, other values replace."""
    merged = dict(under)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(dict(merged[key]), value)
        elif isinstance(value, Mapping):
            merged[key] = deep_merge({}, value)
        else:
            merged[key] = value
    return merged


def apply_override(raw: dict[str, Any], text: str) -> list[str]:
    """Apply one ``KEY=VALUE`` to ``raw`` in place; returns the dotted keys it set."""
    key, separator, value_text = text.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not separator or not key or not all(parts):
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. train.max_steps=100")
    if parts[0] == "base":
        raise ConfigError(f"--set {text!r}: 'base' can only be given inside a config file")
    try:
        value = parse_yaml(value_text)
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML: {error}") from None
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            section = ".".join(parts[: depth + 1])
            raise ConfigError(f"--set {text!r}: {section} is a value ({child!r}), not a section")
        node = child
    last = parts[-1]
    if isinstance(value, dict) and isinstance(node.get(last), dict):
        node[last] = deep_merge(node[last], value)
    else:
        node[last] = value
    if isinstance(value, dict):
        return [f"{key}.{leaf}" for leaf in flatten(value)]
    return [key]


def set_default(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Give the dotted key ``value`` unless ``raw`` already sets it (a malformed section is left
    for :func:`build` to report)."""
    node: Any = raw
    *sections, last = dotted.split(".")
    for section in sections:
        if node.get(section) is None:
            node[section] = {}
        node = node[section]
        if not isinstance(node, dict):
            return
    node.setdefault(last, value)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping):
            flat.update(flatten(value, dotted))
        else:
            flat[dotted] = value
    return flat
