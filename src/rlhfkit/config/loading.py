"""Loading configurations of any schema (a tree of frozen dataclasses), with messages that say what is wrong.

:func:`load_structured` builds a configuration in plain Python data first, then lets OmegaConf turn it
into the dataclasses:

1. each YAML file (read by :mod:`rlhfkit.config.files`), checked against the schema and merged in
   (mappings merge key by key; any other value, lists included, replaces);
2. each ``key=value`` override, checked and set in place; a number in the key picks a list entry, so
   ``rewards.1.weight=0.5`` changes one field of the second reward of a file;
3. OmegaConf merges that into the schema's defaults and converts it to the dataclasses (resolving
   ``${...}`` interpolation), then the schema's own ``validate()`` checks the cross-field rules.

Every check raises :class:`~rlhfkit.errors.ConfigError` with one line that names the file or override,
the key (``reward.rewards[0].weight``), what was expected and what was given. Also here: ``replace``
with dotted keys and the field documentation that ``rlhfkit config --explain`` prints.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import itertools
import json
import math
import os
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rlhfkit.config.files import TAGGED_VALUE_ERRORS, first_line, read_config_file, tagged_value_problem
from rlhfkit.errors import ConfigError

_OVERRIDE_FORM = "section.key=value, e.g. sft.learning_rate=1e-4"


@dataclass(frozen=True)
class _Source:
    label: str
    """How messages name it: "config file 'a.yaml'" or "override 'sft.max_steps=x'"."""
    override: bool = False


def load_structured(
    schema: type, files: str | os.PathLike | Sequence[str | os.PathLike], overrides: str | Sequence[str]
) -> Any:
    """The configuration of type ``schema`` from its defaults, ``files`` and ``overrides``, validated."""
    files = [files] if isinstance(files, (str, os.PathLike)) else files  # one path, not its characters
    overrides = [overrides] if isinstance(overrides, str) else overrides
    state: dict = {}  # what the files and overrides give; the defaults join in at the end
    for path in files:
        _merge_into(state, _file_layer(schema, Path(path)))
    for item in overrides:
        _apply_override(schema, state, item)
    cfg = _to_dataclasses(schema, state)
    bad = _non_finite(cfg)
    if bad:
        raise ConfigError(f"config key {bad[0]!r} is {bad[1]}, not a finite number; give a finite value.")
    cfg.validate()
    return cfg


def _merge_into(state: dict, layer: dict) -> None:
    """Merge ``layer`` into ``state`` the way OmegaConf merges: mappings key by key, anything else replaces."""
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(state.get(key), dict):
            _merge_into(state[key], value)
        else:
            state[key] = value


def _to_dataclasses(schema: type, state: dict) -> Any:
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), state))
    except OmegaConfBaseException as e:  # left after the checks: ${...} interpolation, ??? (missing) values
        where = f" at {e.full_key!r}" if e.full_key else ""
        raise ConfigError(f"invalid configuration{where}: {first_line(e.msg)}.") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid configuration: {first_line(str(e))}.") from None


# --------------------------------------------------------------------------------------------------
# Checking data against the schema


def _file_layer(schema: type, path: Path) -> dict:
    raw = read_config_file(path)
    if raw is None:
        return {}  # an empty file (or one with only comments) changes nothing
    return _check_mapping(schema, raw, "", _Source(f"config file {str(path)!r}"))


def _check_mapping(cls: type, value: Any, path: str, source: _Source) -> dict:
    """``value`` as a dict of checked fields of dataclass ``cls``."""
    if not isinstance(value, dict):
        raise ConfigError(_not_a_mapping(cls, value, path, source))
    types = _resolved_types(cls)
    checked = {}
    for key, item in value.items():
        name = str(key)
        if name not in types:
            raise ConfigError(_unknown_key_message(cls, _join(path, name), source))
        checked[name] = _check_field(cls, name, item, _join(path, name), source)
    return checked


def _check_field(owner: type, name: str, value: Any, path: str, source: _Source) -> Any:
    tp, optional = _unwrap_optional(_resolved_types(owner)[name])
    if dataclasses.is_dataclass(tp):
        return {} if value is None else _check_mapping(tp, value, path, source)  # an empty section changes nothing
    entry = _list_item_type(tp)
    if entry is not None and dataclasses.is_dataclass(entry) and not (value is None and optional):
        if not isinstance(value, list):
            raise ConfigError(f"{source.label}: {path!r} must be a list of mappings, one per entry (e.g. "
                              f"[{{{_example(entry)}}}]), not {_kind(value)}: {_shown(value)}.")  # fmt: skip
        return [_check_entry(entry, item, f"{path}[{i}]", source) for i, item in enumerate(value)]
    if not _leaf_accepts(owner, name, value):
        raise ConfigError(f"{source.label}: {path!r} expects {describe_type(_resolved_types(owner)[name])}, got "
                          f"{_shown(value)}{_leaf_hint(tp, value)}.")  # fmt: skip
    return value


def _check_entry(cls: type, value: Any, path: str, source: _Source) -> dict:
    if value is None:
        raise ConfigError(f"{source.label}: {path!r} is empty; give a mapping of keys such as {{{_example(cls)}}}.")
    return _check_mapping(cls, value, path, source)


def _leaf_accepts(owner: type, name: str, value: Any) -> bool:
    """Whether OmegaConf can store ``value`` in field ``name`` of ``owner`` (its conversions: "1e-4" -> 1e-4)."""
    try:
        OmegaConf.merge(_one_field(owner, name), {name: value})
    except (OmegaConfBaseException, TypeError, ValueError):
        return False
    return True


@cache
def _one_field(owner: type, name: str) -> DictConfig:
    """A config of just field ``name`` of ``owner`` (merge copies it; a copy of all of ``owner`` costs more)."""
    return OmegaConf.structured(dataclasses.make_dataclass("Field", [(name, _resolved_types(owner)[name])]))


def _leaf_hint(tp: Any, value: Any) -> str:
    if tp is str and value is not None:
        return " (put it in quotes to keep it as text)"
    if _list_item_type(tp) is not None and not isinstance(value, (list, dict)) and value is not None:
        return f" (write a list in brackets, e.g. [{_shown(value)}])"
    return ""


def _not_a_mapping(cls: type, value: Any, path: str, source: _Source) -> str:
    names = [f.name for f in dataclasses.fields(cls)][:3]
    got = f"not {_kind(value)}: {_shown(value)}"
    if not path:
        return f"{source.label} must hold a mapping of keys (such as {', '.join(names)}), {got}."
    if path.endswith("]"):
        how = f"write each entry as a mapping, e.g. {{{_example(cls)}}}"
    elif source.override:
        how = f"set one key at a time, e.g. --set {path}.{_example(cls, '=')}"
    else:
        how = f"write its keys on the lines below it, indented, e.g. `{_example(cls)}`"
    return f"{source.label}: {path!r} must be a mapping of keys (such as {', '.join(names)}), {got}; {how}."


def _unknown_key_message(cls: type, path: str, source: _Source | None = None) -> str:
    prefix, _, name = path.rpartition(".")
    names = [f.name for f in dataclasses.fields(cls)]
    prefix = prefix + "." if prefix else ""
    close = difflib.get_close_matches(name, names, n=1)
    guess = f" (did you mean {prefix + close[0]!r}?)" if close else ""
    where = f"{source.label}: " if source else ""
    return (f"{where}unknown config key {path!r}{guess}. Valid keys here: {', '.join(prefix + n for n in names)}. "
            "Run `rlhfkit config --explain` for all (`rlhfkit config --demo --explain` adds the demo's own).")  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Overrides: key=value, set in place


def _apply_override(schema: type, state: dict, item: str) -> None:
    parts, value = _parse_override(item)
    _set(schema, state, parts, value, "", _Source(f"override {item!r}", override=True))


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, text = str(item).partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r} must look like {_OVERRIDE_FORM}.")
    parts = key.split(".")
    if not all(parts) or any(c.isspace() for c in key):
        raise ConfigError(f"override {item!r}: the key {key!r} has an empty part or spaces; write it like "
                          f"{_OVERRIDE_FORM}.")  # fmt: skip
    try:  # OmegaConf's own value syntax: 1e-4 is a number, [a, b] a list, {k: v} a mapping, ${...} interpolation
        return parts, OmegaConf.to_container(OmegaConf.from_dotlist([f"value={text}"]), resolve=False)["value"]
    except (yaml.YAMLError, OmegaConfBaseException, *TAGGED_VALUE_ERRORS) as e:
        reason = first_line(str(e))
        if isinstance(e, yaml.MarkedYAMLError) and e.problem:
            reason = e.problem
        elif not isinstance(e, (yaml.YAMLError, OmegaConfBaseException)):
            reason = tagged_value_problem(text, e)
        raise ConfigError(f"override {item!r}: could not parse the value {text!r} ({reason}). Quote text that "
                          "holds brackets, braces or ': ', e.g. --set 'data.template=\"...\"'; write lists as "
                          "[a, b] and mappings as {key: value}.") from None  # fmt: skip


def _set(cls: type, node: dict, parts: list[str], value: Any, path: str, source: _Source) -> None:
    """Set ``value`` at ``parts`` inside ``node``, the plain-data form of dataclass ``cls``."""
    name, rest = parts[0], parts[1:]
    types = _resolved_types(cls)
    if name not in types:
        raise ConfigError(_unknown_key_message(cls, _join(path, name), source))
    here = _join(path, name)
    if not rest:
        checked = _check_field(cls, name, value, here, source)
        _merge_into(node, {name: checked})
        return
    tp, _ = _unwrap_optional(types[name])
    if dataclasses.is_dataclass(tp):
        if not isinstance(node.get(name), dict):
            node[name] = {}
        _set(tp, node[name], rest, value, here, source)
        return
    entry = _list_item_type(tp)
    if entry is not None and dataclasses.is_dataclass(entry):
        if name not in node:  # an entry of the default list: start from a copy of it
            node[name] = OmegaConf.to_container(OmegaConf.structured(cls), resolve=False)[name]
        _set_entry(entry, node[name] or [], rest, value, here, source)
        return
    if entry is not None:
        raise ConfigError(f"{source.label}: {here!r} is {describe_type(types[name])}; set it whole, e.g. "
                          f"--set '{here}=[a, b]'.")  # fmt: skip
    raise ConfigError(f"{source.label}: {here!r} is a single value ({describe_type(types[name])}), so it has no "
                      f"key {rest[0]!r}; write it like {_OVERRIDE_FORM}.")  # fmt: skip


def _set_entry(cls: type, entries: list, parts: list[str], value: Any, path: str, source: _Source) -> None:
    """``parts[0]`` is the number of an entry of ``entries`` (a list of dataclass ``cls``); set the rest in it."""
    index, rest = parts[0], parts[1:]
    if not index.isdigit():
        raise ConfigError(f"{source.label}: {path!r} is a list; pick an entry by its number, e.g. {path}.0."
                          f"{_example(cls, '=')}, or set the whole list.")  # fmt: skip
    if int(index) >= len(entries):
        has = f"has {len(entries)} entries (numbered from 0)" if entries else "is empty"
        raise ConfigError(f"{source.label}: {path!r} {has}, so there is no entry {index}; set the whole list "
                          f"instead, e.g. --set '{path}=[{{{_example(cls)}}}]'.")  # fmt: skip
    here = f"{path}[{index}]"
    if rest:
        _set(cls, entries[int(index)], rest, value, here, source)
    else:
        _merge_into(entries[int(index)], _check_entry(cls, value, here, source))


# --------------------------------------------------------------------------------------------------
# Types and values in messages


def describe_type(tp: Any) -> str:
    """A field's type in words: 'a float', 'an int or null', 'a list of strings', 'true or false'."""
    base, optional = _unwrap_optional(tp)
    words = {bool: "true or false", int: "an int", float: "a float", str: "a string"}
    entry = _list_item_type(base)
    if base in words:
        text = words[base]
    elif entry is not None:
        plural = {str: "strings", int: "ints", float: "floats"}
        text = "a list of " + plural.get(entry, "mappings" if dataclasses.is_dataclass(entry) else "values")
    elif dataclasses.is_dataclass(base):
        text = "a mapping of keys"
    else:
        text = str(base).replace("typing.", "")
    return f"{text} or null" if optional else text


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else tp), True
    return tp, False


def _list_item_type(tp: Any) -> Any:
    if typing.get_origin(tp) in (list, tuple):
        args = typing.get_args(tp)
        return args[0] if args else Any
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    kinds = {str: "a string", list: "a list", dict: "a mapping"}
    return next((k for t, k in kinds.items() if isinstance(value, t)), f"a {type(value).__name__}")


def _shown(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _example(cls: type, sep: str = ": ") -> str:
    """A field of ``cls`` with its default as `key: value` (or `key=value`): the first with a plain default."""
    fields = dataclasses.fields(cls)
    plain = [f for f in fields if isinstance(f.default, (bool, int, float, str))]
    if plain:
        return f"{plain[0].name}{sep}{plain[0].default}"
    is_list = _list_item_type(_unwrap_optional(_resolved_types(cls)[fields[0].name])[0]) is not None
    return f"{fields[0].name}{sep}{'[...]' if is_list else '...'}"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _non_finite(cfg: Any, prefix: str = "") -> tuple[str, float] | None:
    """The first float field of ``cfg`` (recursively, lists of dataclasses too) that is NaN or infinite."""
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), prefix + f.name
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for i, item in items:
            where = key if i is None else f"{key}[{i}]"
            if isinstance(item, float) and not math.isfinite(item):
                return where, item
            found = _non_finite(item, where + ".") if dataclasses.is_dataclass(item) else None
            if found:
                return found
    return None


@cache
def _resolved_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


# --------------------------------------------------------------------------------------------------
# Changing a loaded config


def replace(cfg: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` that accepts dotted keys: replace(cfg, **{"sft.max_steps": 10})."""
    nested: dict[str, dict[str, Any]] = {}
    flat: dict[str, Any] = {}
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            flat[head] = value
    for head, sub in nested.items():
        flat[head] = replace(getattr(cfg, head), **sub)
    return dataclasses.replace(cfg, **flat)


# --------------------------------------------------------------------------------------------------
# Field documentation (the attribute docstrings of the dataclasses), for `rlhfkit config --explain`


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Map each field of dataclass ``cls`` to the docstring written right after it (in ``cls`` or a base class
    it extends, the nearest winning: the reward model's LoRA section redefines ``r``)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_own_field_docs(klass))
    return docs


def _own_field_docs(cls: type) -> dict[str, str]:
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = nxt.value.value.strip()
    return docs


def explain(cfg: Any, prefix: str = "") -> list[tuple[str, Any, str]]:
    """Flatten ``cfg`` into (dotted key, value, docstring) rows."""
    rows: list[tuple[str, Any, str]] = []
    docs = field_docs(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = prefix + f.name
        if dataclasses.is_dataclass(value):
            rows.extend(explain(value, key + "."))
        else:
            rows.append((key, value, docs.get(f.name, "")))
    return rows
