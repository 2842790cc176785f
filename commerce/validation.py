"""Typed request definitions and their validators, compiled once. Pure: no I/O.

A request is a frozen dataclass whose fields carry their rule as ``Annotated`` metadata::

    @dataclass(frozen=True, slots=True)
    class Buy:
        sale: SaleId
        qty: Annotated[int, Range(1, 1_000_000)] = 1

``Schema(Buy, "buy")`` reads the annotations once and builds one checker per field; ``parse`` then
checks a decoded JSON / msgpack object and returns a ``Buy``. A field without a default is required.
An absent field takes its default; JSON ``null`` is a value of the wrong type (``BAD_MESSAGE``),
unless the field's type admits None (``X | None``: null means "none") or carries ``NullMeansAbsent``.
A value of the right type outside its range is ``INVALID``. msgspec.convert was measured against these
validators on the buy path and was slower (loadtest/ab_parse.py; docs/BENCHMARKS.md).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from .errors import BadMessage, InvalidInput

__all__ = [
    "Match", "Text", "Range", "Number", "Check", "NullMeansAbsent", "Schema", "ID_RE", "SLUG_RE",
    "Id", "Slug", "ID_RULE", "SLUG_RULE",
]

ID_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}\Z")   # user ids, request ids, hold ids, comment ids
SLUG_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")      # room, product and sale ids
ID_RULE = "1-128 characters of [A-Za-z0-9_.:@-]"
SLUG_RULE = "1-64 characters of [A-Za-z0-9_-]"

T = TypeVar("T")
Checker = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Match:
    """A string matching ``pattern``; ``expect`` is the human rule."""
    pattern: re.Pattern[str]
    expect: str


@dataclass(frozen=True, slots=True)
class Text:
    """A string of at most ``max_len`` characters (stripped); empty only with ``allow_empty``."""
    max_len: int
    allow_empty: bool = False


@dataclass(frozen=True, slots=True)
class Range:
    """An integer (not a bool, not a float) in [lo, hi]."""
    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class Number:
    """A finite int or float (not a bool)."""


@dataclass(frozen=True, slots=True)
class Check:
    """Anything else: ``fn(value)`` returns the parsed value or raises ValueError; ``expect`` names it."""
    fn: Callable[[Any], Any]
    expect: str


class _NullMeansAbsent:
    __slots__ = ()


NullMeansAbsent = _NullMeansAbsent()

Id = Annotated[str, Match(ID_RE, ID_RULE)]
Slug = Annotated[str, Match(SLUG_RE, SLUG_RULE)]


def _compile(where: str, rule: object) -> Checker:
    def wrong(expect: str) -> BadMessage:
        return BadMessage(f"{where} must be {expect}")

    if isinstance(rule, Match):
        match, expect = rule.pattern.match, rule.expect

        def check_match(v: Any) -> Any:
            if v.__class__ is not str or not match(v):
                raise wrong(expect)
            return v
        return check_match
    if isinstance(rule, Text):
        max_len, allow_empty = rule.max_len, rule.allow_empty

        def check_text(v: Any) -> Any:
            if v.__class__ is not str:
                raise wrong("a string")
            v = v.strip()
            if not v and not allow_empty:
                raise wrong("a non-empty string")
            if len(v) > max_len:
                raise InvalidInput(f"{where} is longer than {max_len} characters")
            return v
        return check_text
    if isinstance(rule, Range):
        lo, hi = rule.lo, rule.hi

        def check_range(v: Any) -> Any:
            if v.__class__ is not int:  # bool is a subclass of int: refused too
                raise wrong("an integer")
            if not lo <= v <= hi:
                raise InvalidInput(f"{where} must be between {lo} and {hi}")
            return v
        return check_range
    if isinstance(rule, Number):
        def check_number(v: Any) -> Any:
            if v.__class__ not in (int, float) or (v.__class__ is float and not math.isfinite(v)):
                raise wrong("a number")
            return v
        return check_number
    if isinstance(rule, Check):
        fn, expect = rule.fn, rule.expect

        def check_custom(v: Any) -> Any:
            try:
                return fn(v)
            except (ValueError, TypeError, KeyError):
                raise wrong(expect) from None
        return check_custom
    raise TypeError(f"{where}: no validation rule (Annotated[type, Match|Text|Range|Number|Check])")


_MISSING = object()


def _metadata(hint: Any) -> tuple[tuple[Any, ...], bool]:
    """The Annotated rules of a field's type, and whether the type admits None (``X | None``)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        optional = type(None) in args
        for a in args:
            if hasattr(a, "__metadata__"):
                return a.__metadata__, optional
        return (), optional
    return getattr(hint, "__metadata__", ()), False


class Schema(Generic[T]):
    """The compiled validators of one request type; ``name`` prefixes field names in messages."""

    __slots__ = ("cls", "name", "fields", "setters")

    def __init__(self, cls: type[T], name: str = "") -> None:
        self.cls = cls
        self.name = name
        hints = typing.get_type_hints(cls, include_extras=True)
        compiled = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            meta, optional = _metadata(hints[f.name])
            rules = [m for m in meta if m is not NullMeansAbsent]
            if len(rules) != 1:
                raise TypeError(f"{cls.__name__}.{f.name}: give exactly one rule in Annotated[...]")
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            default = None if required else f.default
            where = f"{name}.{f.name}" if name else f.name
            nullable = optional or NullMeansAbsent in meta
            compiled.append((f.name, _compile(where, rules[0]), required, default, nullable, where))
        self.fields: tuple[tuple[str, Checker, bool, Any, bool, str], ...] = tuple(compiled)
        self.setters = _slot_setters(cls, [c[0] for c in compiled])

    def parse(self, obj: Mapping[str, Any]) -> T:
        """Check ``obj`` (a decoded JSON object) and build the request; unknown keys are ignored."""
        values: list[Any] = []
        for name, check, required, default, nullable, where in self.fields:
            v = obj.get(name, _MISSING)
            if v is _MISSING or (v is None and nullable):
                if required:
                    raise BadMessage(f"{where} is required")
                values.append(default)
            elif v is None:
                raise BadMessage(f"{where} must not be null (leave it out for the default)")
            else:
                values.append(check(v))
        setters = self.setters
        if setters is None:
            return self.cls(*values)
        # a frozen slots dataclass's __init__ sets each field through object.__setattr__ (~0.3 µs a field):
        # the slots' own descriptors set the checked values directly (one request per inbound message)
        inst = _new(self.cls)
        for put, v in zip(setters, values, strict=True):
            put(inst, v)
        return inst


_new = object.__new__
_MemberDescriptor = types.MemberDescriptorType


def _slot_setters(cls: type, names: list[str]) -> tuple[Callable[[Any, Any], None], ...] | None:
    """The slot setters of ``cls``'s fields, in order, when building it by them is the same as calling it
    (a slots dataclass without ``__post_init__``); else None (``parse`` calls the class)."""
    if hasattr(cls, "__post_init__") or getattr(cls, "__new__", None) is not _new:
        return None
    descs = [cls.__dict__.get(n) for n in names]
    if not all(type(d) is _MemberDescriptor for d in descs):
        return None
    return tuple(d.__set__ for d in descs)  # type: ignore[union-attr]
