"""Hyperparameters declared once: a method's `Config` is a frozen dataclass of `hparam` fields.

Each field carries its type, default, allowed range or choices and a one-line
doc; the dataclass checks every value when it is built (one `ValueError` per
bad value, naming the field and what it accepts). The CLI parses `--set
key=value` from the same fields, `--list-hparams` prints them, and
`results.json` records `to_dict()`:

    @dataclasses.dataclass(frozen=True)
    class Config(Hyperparams):
        lr: float = hparam(0.03, "SGD step size", gt=0)
        buffer_size: int = hparam(500, "replay capacity", ge=1)
"""

from __future__ import annotations

import ast
import dataclasses
import typing


def hparam(default, doc: str, *, gt=None, ge=None, le=None, choices=None, sweepable=True):
    """A `Config` field: `default`, its `doc`, and the values allowed (`gt`/`ge`/`le` bounds for
    numbers and for each item of a tuple, `choices` for strings). `sweepable=False`: a float
    that a grid may not sweep in one program (`cljax.run.sweep`: it does more than enter the
    step as a number)."""
    meta = {"doc": doc, "gt": gt, "ge": ge, "le": le, "choices": choices, "sweepable": sweepable}
    return dataclasses.field(default=default, metadata=meta)


def _kind(tp) -> tuple[type, bool]:
    """`(int, float, bool, str or tuple (of ints), whether None is allowed)` of an annotation."""
    args = typing.get_args(tp)
    nullable = type(None) in args
    if nullable:
        (tp,) = (a for a in args if a is not type(None))
    origin = typing.get_origin(tp)
    return (tuple if origin is tuple or tp is tuple else tp), nullable


def _bounds_text(meta) -> str:
    parts = []
    if meta.get("gt") is not None:
        parts.append(f"> {meta['gt']}")
    if meta.get("ge") is not None:
        parts.append(f">= {meta['ge']}")
    if meta.get("le") is not None:
        parts.append(f"<= {meta['le']}")
    if meta.get("choices"):
        parts.append("one of " + ", ".join(map(str, meta["choices"])))
    return " and ".join(parts)


def _in_bounds(value, meta) -> bool:
    if meta.get("gt") is not None and not value > meta["gt"]:
        return False
    if meta.get("ge") is not None and not value >= meta["ge"]:
        return False
    return meta.get("le") is None or value <= meta["le"]


class Hyperparams:
    """Base of the frozen `Config` dataclasses: validation, CLI parsing, listing, recording."""

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = _check(type(self), f, *_kind(hints[f.name]), getattr(self, f.name))
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Checks between fields (override); raise ValueError with one clear line."""

    def to_dict(self) -> dict:
        """The values as written (what `results.json` records)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def build(cls, values: dict | None = None, **kw):
        """A `Config` from a dict and keywords; a name it has no field for is a ValueError."""
        values = {**(values or {}), **kw}
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise ValueError(
                f"{cls.owner()} has no setting {', '.join(unknown)}; "
                f"choose from {', '.join(cls.names())}"
            )
        return cls(**values)

    @classmethod
    def owner(cls) -> str:
        return cls.__module__.rsplit(".", 1)[-1]

    @classmethod
    def parse(cls, key: str, text: str):
        """The value of `--set key=text`, typed by the field; ValueError when it is not valid."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if key not in fields:
            raise ValueError(
                f"--set {key}: {cls.owner()} has no such setting; "
                f"choose from {', '.join(sorted(fields))}"
            )
        kind, nullable = _kind(typing.get_type_hints(cls)[key])
        if nullable and text.lower() == "none":
            return None
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"--set {key}={text}: expected true or false")
            return text.lower() in ("true", "1")
        if kind is str:
            return text
        if kind is tuple:
            if text.strip() == "":
                return ()
            value = _literal(text)
            return value if isinstance(value, tuple) else (value,)
        value = _literal(text)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        return value

    @classmethod
    def describe(cls) -> list[str]:
        """One line per field: name, type, default, allowed values, doc."""
        hints = typing.get_type_hints(cls)
        lines = []
        for f in dataclasses.fields(cls):
            kind, nullable = _kind(hints[f.name])
            kind = kind.__name__ + (" or None" if nullable else "")
            allowed = _bounds_text(f.metadata)
            allowed = f" [{allowed}]" if allowed else ""
            lines.append(f"{f.name} ({kind}, default {f.default!r}){allowed}: {f.metadata['doc']}")
        return lines


def _literal(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _check(cls, f, kind, nullable, value):
    """`value` as field `f` stores it, or a ValueError naming the field and what it accepts."""
    where = f"{cls.owner()} {f.name}"
    if nullable and value is None:
        return None
    meta = f.metadata
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is tuple:
        if isinstance(value, list):
            value = tuple(value)
        ok = isinstance(value, tuple) and all(
            isinstance(v, int) and not isinstance(v, bool) and _in_bounds(v, meta) for v in value
        )
        if not ok:
            bounds = _bounds_text(meta)
            raise ValueError(
                f"{where} must be a tuple of integers{' ' + bounds if bounds else ''}, got {value!r}"
            )
        return value
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        article = "an" if kind is int else "a"
        raise ValueError(f"{where} must be {article} {kind.__name__}, got {value!r}")
    if kind is str:
        if meta.get("choices") and value not in meta["choices"]:
            raise ValueError(f"{where} must be one of {', '.join(meta['choices'])}, got {value!r}")
        return value
    if kind in (int, float) and not _in_bounds(value, meta):
        raise ValueError(f"{where} must be {_bounds_text(meta)}, got {value!r}")
    return value
