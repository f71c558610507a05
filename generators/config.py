"""One way to save and reload a config dataclass (MuseumConfig, FitConfig, GANConfig, LeFTConfig,
ModeSeekingConfig, TrainConfig, EvaluatorConfig, MiniBaseConfig), and to set its fields from
`KEY=VALUE` text (the commands' `--set`).

On disk a config is JSON: tuples become lists, nested dicts and lists are copied. Reading one
back turns lists into tuples where the field is a tuple, gives fields the file lacks their
defaults, or what the class's ABSENT_MEANS says such a file meant where a default changed since
(a config saved before a field was added still loads, and means what it meant), and
refuses keys the class does not know (a config from newer code, or a typo) unless asked to
ignore them.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing

from generators.errors import UserError


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def config_to_dict(cfg) -> dict:
    """The config as JSON-ready data: dataclasses.asdict with tuples as lists."""
    return _plain(dataclasses.asdict(cfg))


def _tuple_fields(cls) -> set[str]:
    """Fields annotated as a tuple (also `tuple[...] | None`)."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve here: read the strings
        hints = {f.name: f.type for f in dataclasses.fields(cls)}
    out = set()
    for f in dataclasses.fields(cls):
        hint = hints.get(f.name, f.type)
        text = hint if isinstance(hint, str) else repr(hint)
        if text.startswith("tuple") or "tuple[" in text or hint is tuple or typing.get_origin(hint) is tuple:
            out.add(f.name)
    return out


def config_from_dict(cls, data: dict, ignore_unknown: bool = False):
    """cls(**data), with lists back to tuples where the field is a tuple; missing fields take
    cls.ABSENT_MEANS[field] if there is one, else their defaults; unknown keys are a UserError (or
    dropped with ignore_unknown)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown and not ignore_unknown:
        raise UserError(f"unknown {cls.__name__} field(s) {unknown}; known: {', '.join(sorted(known))}")
    tuples = _tuple_fields(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in known:
            continue
        kwargs[key] = tuple(value) if key in tuples and isinstance(value, list) else value
    for key, meant in getattr(cls, "ABSENT_MEANS", {}).items():
        kwargs.setdefault(key, meant)
    return cls(**kwargs)


def parse_overrides(pairs: list[str], cls, key_prefix: str = "") -> dict:
    """`KEY=VALUE` pairs as field values of config class `cls`: VALUE is read as JSON (numbers,
    true/false, null, lists), else taken as a plain string; lists become tuples where the field is
    a tuple. A key the class lacks, or a pair without '=', is a UserError naming the known keys
    (written with key_prefix, where a command spreads --set over several configs)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    tuples = _tuple_fields(cls)
    hints = _hints(cls)
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or key not in fields:
            raise UserError(f"--set {key_prefix + pair!r}: expected KEY=VALUE with KEY one of "
                            f"{', '.join(key_prefix + f for f in sorted(fields))}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
        if isinstance(out[key], list) and key in tuples:
            out[key] = tuple(out[key])
        hint = hints.get(key)
        if hint is not None and not _fits(out[key], hint):
            raise UserError(f"--set {key_prefix + pair!r}: {key_prefix + key} takes {_hint_text(hint)}, "
                            f"not {json.dumps(_plain(out[key]))}")
    return out


def _hints(cls) -> dict:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve here: no type check
        return {}


def _fits(value, hint) -> bool:
    """Whether a --set value (JSON-decoded) is of the field's annotated type. Hints this does not
    model (dicts, Any, classes) accept anything; an int is a float, a bool is not a number."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]
            return all(_fits(v, args[0]) for v in value)
        return not args or (len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args)))
    if origin is list:
        return isinstance(value, list) and (not args or all(_fits(v, args[0]) for v in value))
    if origin is typing.Literal:
        return value in args
    return True


def _hint_text(hint) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "text", type(None): "null"}
    if hint in names:
        return names[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_hint_text(a) for a in args)
    if (origin is tuple and len(args) == 2 and args[1] is Ellipsis) or (origin is list and args):
        plural = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}
        return f"a JSON list of {plural.get(args[0], _hint_text(args[0]))}"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    return str(hint)


def with_overrides(cfg, pairs: list[str]):
    """A copy of config `cfg` with `KEY=VALUE` pairs applied (the class's own checks run again)."""
    return dataclasses.replace(cfg, **parse_overrides(pairs, type(cfg))) if pairs else cfg


class SavedConfig:
    """to_dict()/from_dict() for a config dataclass, by the rules above. Subclasses set
    IGNORE_UNKNOWN = True where a newer file's extra keys must not stop an older reader."""

    IGNORE_UNKNOWN: typing.ClassVar[bool] = False

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict):
        return config_from_dict(cls, data, ignore_unknown=cls.IGNORE_UNKNOWN)


def command_line() -> str:
    """The command that is running, as a user would retype it ("studio ..." for the CLI): what a
    trained asset's training_options.json records so it can be reproduced."""
    import sys

    if sys.argv and sys.argv[0].endswith("studio"):
        return "studio " + " ".join(sys.argv[1:])
    return " ".join(sys.argv)
