"""A small evaluator for the ``$match`` filters of legacy watches.

OpenFlow's legacy ``[{"$match": {...}}]`` watch form only checks that the keys exist; this one
compares values, with MongoDB's rules for the operators it knows: equality (a value, or a
regular expression from ``"__REGEXP ..."``), ``$eq``, ``$ne``, ``$gt``, ``$gte``, ``$lt``,
``$lte``, ``$in``, ``$nin``, ``$exists``, ``$and``, ``$or``, ``$nor``, and dotted paths that
reach into sub-documents and arrays. Anything else is refused when the watch is registered, so
a filter never silently matches more than it says.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from iapflow.errors import ApiError

_MISSING = object()
_COMPARISONS = ("$gt", "$gte", "$lt", "$lte")
_FIELD_OPERATORS = frozenset({"$eq", "$ne", *_COMPARISONS, "$in", "$nin", "$exists"})
_LOGICAL = frozenset({"$and", "$or", "$nor"})

Predicate = Callable[[Mapping[str, Any]], bool]


def compile_match(query: Any, where: str = "$match") -> Predicate:
    """Check ``query`` and return a predicate over documents; ApiError names what is wrong."""
    if not isinstance(query, Mapping):
        raise ApiError(f"{where} must be an object of field conditions")
    parts: list[Predicate] = []
    for key, condition in query.items():
        if not isinstance(key, str) or not key:
            raise ApiError(f"{where}: field names must be non-empty strings")
        if key in _LOGICAL:
            parts.append(_logical(key, condition, f"{where}.{key}"))
        elif key.startswith("$"):
            raise ApiError(
                f"{where}: {key} is not supported in watch filters; use field conditions with "
                "$eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $exists, or $and/$or/$nor"
            )
        else:
            parts.append(_field(key, condition, f"{where}.{key}"))
    return lambda doc: all(part(doc) for part in parts)


def _logical(operator: str, clauses: Any, where: str) -> Predicate:
    if not isinstance(clauses, list) or not clauses:
        raise ApiError(f"{where} must be a non-empty list of filters")
    compiled = [compile_match(c, f"{where}[{i}]") for i, c in enumerate(clauses)]
    if operator == "$and":
        return lambda doc: all(p(doc) for p in compiled)
    if operator == "$or":
        return lambda doc: any(p(doc) for p in compiled)
    return lambda doc: not any(p(doc) for p in compiled)


def _is_operator_object(condition: Any) -> bool:
    return (
        isinstance(condition, Mapping)
        and bool(condition)
        and all(isinstance(k, str) and k.startswith("$") for k in condition)
    )


def _field(path: str, condition: Any, where: str) -> Predicate:
    parts = path.split(".")
    if not _is_operator_object(condition):
        _check_value(condition, where)
        return lambda doc: _equals_any(_values(doc, parts), condition)
    tests: list[Callable[[list[Any]], bool]] = []
    for operator, operand in condition.items():
        if operator not in _FIELD_OPERATORS:
            raise ApiError(
                f"{where}: {operator} is not supported in watch filters "
                "(supported: $eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $exists)"
            )
        tests.append(_operator_test(operator, operand, f"{where}.{operator}"))
    return lambda doc: all(test(_values(doc, parts)) for test in tests)


def _operator_test(operator: str, operand: Any, where: str) -> Callable[[list[Any]], bool]:
    if operator == "$exists":
        if not isinstance(operand, bool | int):
            raise ApiError(f"{where} must be true or false")
        wanted = bool(operand)
        return lambda values: bool(values) == wanted
    if operator in ("$in", "$nin"):
        if not isinstance(operand, list):
            raise ApiError(f"{where} must be a list of values")
        for item in operand:
            _check_value(item, where)
        if operator == "$in":
            return lambda values: any(_equals_any(values, item) for item in operand)
        return lambda values: not any(_equals_any(values, item) for item in operand)
    _check_value(operand, where)
    if operator == "$eq":
        return lambda values: _equals_any(values, operand)
    if operator == "$ne":
        return lambda values: not _equals_any(values, operand)
    if isinstance(operand, re.Pattern):
        raise ApiError(f"{where} cannot compare with a regular expression")
    return lambda values: any(_compare(v, operand, operator) for v in _flat(values))


def _check_value(value: Any, where: str) -> None:
    """Refuse operator objects hiding inside values, such as ``{"a": {"b": {"$gt": 1}}}``."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if isinstance(key, str) and key.startswith("$"):
                raise ApiError(f"{where}: {key} is not supported inside a value")
            _check_value(inner, where)
    elif isinstance(value, list):
        for inner in value:
            _check_value(inner, where)


def _values(doc: Any, parts: list[str]) -> list[Any]:
    """Every value the dotted path reaches, descending into arrays as MongoDB does."""
    current = [doc]
    for part in parts:
        found: list[Any] = []
        for value in current:
            if isinstance(value, Mapping):
                if part in value:
                    found.append(value[part])
            elif isinstance(value, list):
                if part.isdigit() and int(part) < len(value):
                    found.append(value[int(part)])
                found.extend(
                    item[part] for item in value if isinstance(item, Mapping) and part in item
                )
        current = found
    return current


def _flat(values: list[Any]) -> Iterator[Any]:
    """The values and, for arrays, their elements (a condition may match either)."""
    for value in values:
        yield value
        if isinstance(value, list):
            yield from value


def _equals_any(values: list[Any], wanted: Any) -> bool:
    if wanted is None and not values:
        return True  # {"x": null} matches a missing x
    return any(_equals(value, wanted) for value in _flat(values))


def _equals(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, re.Pattern):
        return isinstance(value, str) and wanted.search(value) is not None
    if _kind(value) != _kind(wanted):
        return False
    return bool(value == wanted)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dt.datetime):
        return "date"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _compare(value: Any, operand: Any, operator: str) -> bool:
    """``value <operator> operand`` within one type, as MongoDB compares; other types: False."""
    kind = _kind(value)
    if kind != _kind(operand) or kind not in ("number", "string", "date"):
        return False
    if kind == "date":
        value, operand = _aware(value), _aware(operand)
    if operator == "$gt":
        return bool(value > operand)
    if operator == "$gte":
        return bool(value >= operand)
    if operator == "$lt":
        return bool(value < operand)
    return bool(value <= operand)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
