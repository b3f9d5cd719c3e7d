"""The config loader: kw-only frozen dataclasses from YAML with dotted `key=value` overrides.

Unknown keys and wrong types are errors that name the dotted key. A leaf: it knows no schema (each lives beside
what it configures, e.g. train/config.py's run `Config`) and imports nothing of ssl_audio but checks.py.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from ssl_audio.checks import FieldError

T = TypeVar("T")


class _Loader(yaml.SafeLoader):
    """YAML 1.2 floats (PyYAML's 1.1 resolver reads 1e-3, no dot, as a string); a repeated key is an error."""

    def construct_document(self, node: yaml.Node) -> Any:
        self._refuse_duplicate_keys(node, "", set())
        return super().construct_document(node)

    def _refuse_duplicate_keys(self, node: yaml.Node, path: str, seen: set[int]) -> None:
        """PyYAML lets the last of two equal keys win silently; a recipe with both is a mistake to report."""
        if id(node) in seen:  # an alias: its node was checked where the anchor is
            return
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._refuse_duplicate_keys(item, f"{path}[{i}]", seen)
        if not isinstance(node, yaml.MappingNode):
            return
        first_seen: dict[Any, yaml.Mark] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue  # '<<' merges are meant to be overridden; complex keys fail later as non-strings
            key = self.construct_object(key_node)
            dotted = f"{path}.{key}" if path else str(key)
            if key in first_seen:
                raise yaml.constructor.ConstructorError(
                    "key first given", first_seen[key], f"duplicate key {dotted!r}", key_node.start_mark
                )
            first_seen[key] = key_node.start_mark
            self._refuse_duplicate_keys(value_node, dotted, seen)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|\.inf|\.nan)$"),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def yaml_reason(err: yaml.YAMLError, *, one_line_text: bool = False) -> str:
    """PyYAML's multi-line error as one line: where, what, and what it was reading (`one_line_text`: no lines)."""
    if not isinstance(err, yaml.MarkedYAMLError):
        return " ".join(str(err).split())

    def where(mark: yaml.Mark) -> str:
        return f"column {mark.column + 1}" if one_line_text else f"line {mark.line + 1}, column {mark.column + 1}"

    parts = []  # "line 5, column 3: <problem>", then "<context> at line 1, column 7" (e.g. where a list opened)
    for text, mark in ((err.problem, err.problem_mark), (err.context, err.context_mark)):
        if not text:
            continue
        text = " ".join(text.split())
        if mark is not None:
            text = f"{text} at {where(mark)}" if parts else f"{where(mark)}: {text}"
        parts.append(text)
    return "; ".join(parts)


def _parse_override_value(item: str, raw: str) -> Any:
    """An override's value as YAML; any tag is refused, since a value on the command line never needs one."""
    try:
        for token in yaml.scan(raw, Loader=_Loader):  # noqa: S506 (scanning constructs nothing)
            if isinstance(token, yaml.TagToken):
                tag = raw[token.start_mark.index : token.end_mark.index]
                raise ValueError(f"config override {item!r}: not valid YAML (tag {tag!r}: overrides take no tags)")
        return parse_yaml(raw)
    except yaml.YAMLError as err:
        raise ValueError(f"config override {item!r}: not valid YAML ({yaml_reason(err, one_line_text=True)})") from None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; returns it converted (int -> float, list -> tuple)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"config key {key!r}: expected a mapping for {tp.__name__}, got {value!r}")
        return _build(tp, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        tagged = _tagged_choices(args)
        if tagged:  # a tagged union (e.g. front-ends): `kind` picks the class, so errors name its own keys
            if not isinstance(value, dict):
                raise ValueError(f"config key {key!r}: expected a mapping with a 'kind', got {value!r}")
            kind = value.get("kind", next(iter(tagged)))
            if kind not in tagged:
                raise ValueError(f"config key {key + '.kind'!r}: {kind!r} is not one of {list(tagged)}")
            return _build(tagged[kind], value, key + ".")
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, key)
            except ValueError:
                continue
        raise ValueError(f"config key {key!r}: {value!r} is not {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise ValueError(f"config key {key!r}: {value!r} is not one of {list(args)}")
        return value
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ValueError(f"config key {key!r}: expected a mapping, got {value!r}")
        return dict(value)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config key {key!r}: expected a list, got {value!r}")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ValueError(f"config key {key!r}: expected {len(args)} items, got {len(value)}")
            return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        return origin(_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):  # YAML's true is not a number
        raise ValueError(f"config key {key!r}: expected {tp.__name__}, got {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ValueError(f"config key {key!r}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _tagged_choices(args: tuple) -> dict[str, type]:
    """{kind: class} when every member of a union is a dataclass with a `kind` literal default, else {}."""
    choices = {}
    for arg in (a for a in args if a is not type(None)):
        fields = dataclasses.fields(arg) if dataclasses.is_dataclass(arg) else ()
        kinds = [f.default for f in fields if f.name == "kind"]
        if not kinds or not isinstance(kinds[0], str):
            return {}
        choices[kinds[0]] = arg
    return choices


def _build(cls: type[T], values: dict, prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown config key {prefix + unknown[0]!r}; {cls.__name__} has: {', '.join(sorted(names))}")
    converted = {name: _convert(v, hints[name], prefix + name) for name, v in values.items()}
    try:
        return cls(**converted)
    except FieldError as err:  # the dataclass's own range checks (__post_init__): give the dotted key
        raise ValueError(f"config key {prefix + err.field!r}: {err.reason}") from None


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"config override {dotted!r}: {'.'.join(parents[: i + 1])!r} is not a section")
        node = child
    node[leaf] = value


def with_overrides(values: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """A copy of the nested dict `values` with `key.sub=value` overrides (values parsed as YAML) applied."""
    values = copy.deepcopy(values)  # overrides must never reach into the caller's nested dicts
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"config override {item!r}: expected key=value, e.g. data.max_samples=32000")
        _set_dotted(values, key.strip(), _parse_override_value(item, raw))
    return values


def from_dict(values: dict, overrides: list[str] | tuple[str, ...] = (), *, schema: type[T]) -> T:
    """Build `schema` from a nested dict plus `key.sub=value` overrides (values parsed as YAML)."""
    return _build(schema, with_overrides(values, overrides))


def load_config(
    yaml_path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...] = (), *, schema: type[T]
) -> T:
    """Load a YAML recipe (or the defaults when `yaml_path` is None) and apply dotted overrides."""
    values: Any = {}
    if yaml_path is not None:
        try:
            values = parse_yaml(Path(yaml_path).read_text(encoding="utf-8")) or {}
        except OSError as err:
            raise ValueError(f"{yaml_path}: cannot read config ({err.strerror})") from None
        except yaml.YAMLError as err:
            raise ValueError(f"{yaml_path}: not valid YAML ({yaml_reason(err)})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{yaml_path}: expected a mapping at the top level, got {type(values).__name__}")
    try:
        return from_dict(values, overrides, schema=schema)
    except ValueError as err:
        raise ValueError(f"{yaml_path or 'defaults'}: {err}") from None


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (tuples as lists) that `from_dict` turns back into the same config."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)
