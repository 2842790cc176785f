"""JSON Schema (draft 2020-12, as OpenAPI 3.1 uses it) of the typed request definitions. Pure: no I/O.

A request body is a frozen dataclass whose fields carry one ``commerce.validation`` rule each; the
schema is read off the same annotations ``Schema`` compiles, so the contract cannot drift from the
checks: ``Match`` -> ``pattern``, ``Text`` -> ``maxLength`` (and ``minLength`` 1 unless it may be
empty), ``Range`` -> ``minimum`` / ``maximum``, ``Number`` -> ``number``, a field without a default ->
``required``, ``X | None`` -> also ``null``, a default -> ``default``. A ``Check`` is a function; its
schema comes from ``CHECKS`` (keyed by the function), else it is described by its ``expect`` text only.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from commerce import audiences, growth_requests, interaction_requests, requests
from commerce.validation import Check, Match, NullMeansAbsent, Number, Range, Text
from inventory.audiences import MAX_CONDS, RULE_KINDS

__all__ = ["body_schema", "rule_schema", "js_pattern", "CHECKS"]

Json = dict[str, Any]


def js_pattern(pattern: re.Pattern[str]) -> str:
    """A Python pattern as an ECMA-262 one: ``\\Z`` (end of string) is ``$`` there."""
    return pattern.pattern.replace("\\Z", "$")


def _fn(alias: Any) -> Callable[..., Any]:
    """The function of an ``Annotated[..., Check(fn, ...)]`` alias."""
    rule = alias.__metadata__[0]
    assert isinstance(rule, Check)
    return rule.fn


def _match(alias: Any) -> Json:
    rule = alias.__metadata__[0]
    return {"type": "string", "pattern": js_pattern(rule.pattern), "description": rule.expect}


_KEY = _match(interaction_requests.KeyId)
_POOL = _match(requests.PoolId)
_SLUG = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
_ID = {"type": "string", "pattern": "^[A-Za-z0-9_.:@-]{1,128}$"}
_BOOL: Json = {"type": "boolean"}


def _text(lo: int, hi: int) -> Json:
    return {"type": "string", "minLength": lo, "maxLength": hi}


def _coupon_terms() -> Json:
    return body_schema(interaction_requests.CouponTerms)


def _cond() -> Json:
    return body_schema(audiences.CondBody)


# The schemas of the Check rules, by function (a Check not listed here is described by its text only).
CHECKS: Mapping[Callable[..., Any], Callable[[], Json]] = {
    _fn(requests.Flag): lambda: _BOOL,
    _fn(growth_requests.Flag): lambda: _BOOL,
    _fn(requests.StockKind): lambda: {"type": "string", "enum": ["restock", "adjust"]},
    _fn(requests.DepositRule): lambda: {"type": "string", "enum": ["refund", "keep"]},
    _fn(requests.SignedUnits): lambda: {"type": "integer", "minimum": -requests.MAX_SALE_UNITS,
                                        "maximum": requests.MAX_SALE_UNITS, "not": {"const": 0}},
    _fn(requests.ProductVariants): lambda: {
        "type": "array", "minItems": 1, "maxItems": requests.MAX_VARIANTS,
        "items": {"type": "object", "required": ["variant_id", "sku"], "additionalProperties": False,
                  "properties": {"variant_id": _SLUG, "sku": _ID, "label": {"type": "string", "maxLength": 64}}}},
    _fn(requests.SaleVariants): lambda: {
        "type": "array", "minItems": 1, "maxItems": requests.MAX_VARIANTS,
        "items": {"type": "object", "required": ["pool"], "additionalProperties": False,
                  "properties": {"pool": _POOL, "units": {"type": "integer", "minimum": 0,
                                                          "maximum": requests.MAX_SALE_UNITS, "default": 0}}}},
    _fn(interaction_requests.Teams): lambda: {
        "type": "array", "minItems": 2, "maxItems": interaction_requests.MAX_TEAMS,
        "items": {"type": "object", "required": ["team_id", "name", "colour", "badge"], "additionalProperties": False,
                  "properties": {"team_id": _KEY, "name": _text(1, 40),
                                 "colour": {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"},
                                 "badge": _text(1, 8)}}},
    _fn(interaction_requests.Options): lambda: {
        "type": "array", "minItems": 2, "maxItems": interaction_requests.MAX_OPTIONS, "items": _text(1, 80)},
    _fn(interaction_requests.Kind): lambda: {"type": "string", "enum": ["amount", "percent"]},
    _fn(interaction_requests.Ids): lambda: {"type": "array", "maxItems": 100, "items": _SLUG},
    _fn(interaction_requests.Prize): lambda: {"oneOf": [
        {"type": "object", "required": ["pool"], "additionalProperties": False,
         "properties": {"pool": _POOL, "units": {"type": "integer", "minimum": 1, "maximum": 100, "default": 1}}},
        {"type": "object", "required": ["coupon"], "additionalProperties": False,
         "properties": {"coupon": _coupon_terms()}}]},
    _fn(interaction_requests.Rule): lambda: {
        "type": "object", "additionalProperties": False,
        "properties": {"keyword": _text(1, 40), "team": _KEY,
                       "watched_s": {"type": "integer", "minimum": 0, "maximum": 86_400, "default": 0},
                       "bought": {"type": "boolean", "default": False}}},
    _fn(audiences.Rules): lambda: {"type": "array", "minItems": 1, "maxItems": MAX_CONDS,
                                   "items": _cond()},
    _fn(typing.get_type_hints(audiences.CondBody, include_extras=True)["signal"]): lambda: {
        "type": "string", "enum": list(RULE_KINDS)},
    _fn(growth_requests.Pools): lambda: {"type": "array", "minItems": 1, "maxItems": 100, "uniqueItems": True,
                                         "items": _POOL},
    _fn(growth_requests.ShopId): lambda: {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,48}$"},
}


def rule_schema(rule: object) -> Json:
    """The JSON Schema of one field rule."""
    if isinstance(rule, Match):
        return {"type": "string", "pattern": js_pattern(rule.pattern), "description": rule.expect}
    if isinstance(rule, Text):
        out: Json = {"type": "string", "maxLength": rule.max_len}
        if not rule.allow_empty:
            out["minLength"] = 1
        return out
    if isinstance(rule, Range):
        return {"type": "integer", "minimum": rule.lo, "maximum": rule.hi}
    if isinstance(rule, Number):
        return {"type": "number"}
    if isinstance(rule, Check):
        known = CHECKS.get(rule.fn)
        out = dict(known()) if known is not None else {}
        out.setdefault("description", rule.expect)
        return out
    raise TypeError(f"no JSON Schema for the rule {rule!r}")


def _default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: v for k, v in dataclasses.asdict(value).items() if v is not None}
    if isinstance(value, tuple):
        return list(value)
    return value


def _nullable(schema: Json) -> Json:
    t = schema.get("type")
    if isinstance(t, str):
        return {**schema, "type": [t, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def _metadata(hint: Any) -> tuple[tuple[Any, ...], bool]:
    """The Annotated rules of a field's type and whether it admits None (as ``commerce.validation`` reads them)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        rules = next((a.__metadata__ for a in args if hasattr(a, "__metadata__")), ())
        return rules, type(None) in args
    return getattr(hint, "__metadata__", ()), False


def body_schema(cls: type) -> Json:
    """The schema of a request dataclass: an object of its fields (unknown keys are ignored by the
    parser, so ``additionalProperties`` stays open)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    props: Json = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):
        meta, optional = _metadata(hints[f.name])
        rules = [m for m in meta if m is not NullMeansAbsent]
        schema = rule_schema(rules[0])
        if optional or NullMeansAbsent in meta:
            schema = _nullable(schema)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
        elif f.default is not None:
            schema["default"] = _default(f.default)
        props[f.name] = schema
    out: Json = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    if cls.__doc__ and not cls.__doc__.startswith(f"{cls.__name__}("):
        out["description"] = " ".join(cls.__doc__.split())
    return out
