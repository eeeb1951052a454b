"""iapflow's JSON delta format: how one version of a document becomes the next.

A delta is a list of operations, applied in order. Each operation names a place in the
document by ``path``, a list of steps from the root: a string steps into an object key, an
integer into an array index. There are three operations::

    {"op": "set",    "path": ["address", "city"], "value": "Oslo"}
    {"op": "unset",  "path": ["nickname"]}
    {"op": "splice", "path": ["tags"], "index": 1, "remove": 2, "insert": ["x", "y"]}

- ``set`` puts ``value`` at ``path``: it adds or replaces an object key, or replaces an array
  element. An empty path replaces the whole value.
- ``unset`` removes an object key.
- ``splice`` changes the array at ``path``: from ``index``, ``remove`` elements are taken out and
  the ``insert`` elements put in their place.

:func:`diff` walks two documents together. Keys only in the old one are unset, keys only in the
new one are set, and values of the same kind are compared deeper: objects key by key, arrays by
trimming the elements both share at the start and at the end and then, when what is left has
the same length, element by element, otherwise with one ``splice``. Anything else that differs
is ``set`` whole. Values are compared as JSON: ``1``, ``1.0`` and ``true`` are three different
values, the order of object keys does not count. Leaf values are stored as they are, so dates
and other store types round-trip too. docs/history.md describes the format for users.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

Delta = list[dict[str, Any]]
Path = list[str | int]

OPERATIONS = ("set", "unset", "splice")


class DeltaError(ValueError):
    """A delta that does not fit the document it is applied to, or is not a delta at all."""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):  # bson's Int64 too
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def same(a: Any, b: Any) -> bool:
    """JSON equality: kinds must match (``1``, ``1.0`` and ``True`` differ), object key order
    does not count, ``NaN`` equals ``NaN``; other store types compare with ``==``."""
    kind = _kind(a)
    if kind != _kind(b):
        return False
    if kind == "object":
        return a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
    if kind == "array":
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if kind == "float" and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def diff(old: Any, new: Any) -> Delta:
    """The operations that turn ``old`` into ``new`` (``[]`` when they are the same)."""
    ops: Delta = []
    _diff_value(old, new, [], ops)
    return ops


def _diff_value(old: Any, new: Any, path: Path, ops: Delta) -> None:
    if same(old, new):
        return
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        _diff_object(old, new, path, ops)
    elif isinstance(old, list | tuple) and isinstance(new, list | tuple):
        _diff_array(old, new, path, ops)
    else:
        ops.append({"op": "set", "path": path, "value": new})


def _diff_object(old: Mapping[str, Any], new: Mapping[str, Any], path: Path, ops: Delta) -> None:
    for key in old:
        if key not in new:
            ops.append({"op": "unset", "path": [*path, key]})
    for key, value in new.items():
        if key in old:
            _diff_value(old[key], value, [*path, key], ops)
        else:
            ops.append({"op": "set", "path": [*path, key], "value": value})


def _diff_array(old: Sequence[Any], new: Sequence[Any], path: Path, ops: Delta) -> None:
    start = 0
    shortest = min(len(old), len(new))
    while start < shortest and same(old[start], new[start]):
        start += 1
    old_end, new_end = len(old), len(new)
    while old_end > start and new_end > start and same(old[old_end - 1], new[new_end - 1]):
        old_end -= 1
        new_end -= 1
    if old_end - start == new_end - start:
        for index in range(start, old_end):
            _diff_value(old[index], new[index], [*path, index], ops)
        return
    ops.append(
        {
            "op": "splice",
            "path": path,
            "index": start,
            "remove": old_end - start,
            "insert": list(new[start:new_end]),
        }
    )


def apply(value: Any, delta: Any, *, in_place: bool = False) -> Any:
    """A copy of ``value`` with ``delta`` applied; ``value`` itself is left as it is, unless
    ``in_place`` (then containers of ``value`` are changed and reused).

    Raises :class:`DeltaError` when ``delta`` is malformed or does not fit ``value`` (a path
    that does not exist, an unset of a missing key, a splice out of range).
    """
    if not isinstance(delta, list):
        raise DeltaError("a delta must be a list of operations")
    result = value if in_place else copy.deepcopy(value)
    for number, op in enumerate(delta):
        try:
            result = _apply_one(result, op)
        except DeltaError as exc:
            raise DeltaError(f"operation {number}: {exc}") from None
    return result


def _check_path(op: Mapping[str, Any]) -> Path:
    path = op.get("path")
    if not isinstance(path, list) or not all(
        isinstance(step, str) or (isinstance(step, int) and not isinstance(step, bool))
        for step in path
    ):
        raise DeltaError("path must be a list of keys (strings) and indexes (integers)")
    return path


def _step(container: Any, step: str | int, path: Path) -> Any:
    if isinstance(step, str):
        if isinstance(container, dict) and step in container:
            return container[step]
    elif isinstance(container, list) and 0 <= step < len(container):
        return container[step]
    raise DeltaError(f"path {path!r} does not exist in the document")


def _walk(root: Any, path: Path) -> Any:
    node = root
    for step in path:
        node = _step(node, step, path)
    return node


def _count(op: Mapping[str, Any], field: str) -> int:
    value = op.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DeltaError(f"splice {field} must be a non-negative integer")
    return value


def _apply_one(root: Any, op: Any) -> Any:
    if not isinstance(op, Mapping) or op.get("op") not in OPERATIONS:
        raise DeltaError(f"not an operation (op must be one of {', '.join(OPERATIONS)})")
    path = _check_path(op)
    kind = op["op"]
    if kind == "splice":
        target = _walk(root, path)
        index, remove = _count(op, "index"), _count(op, "remove")
        insert = op.get("insert")
        if not isinstance(target, list):
            raise DeltaError(f"splice path {path!r} is not an array")
        if not isinstance(insert, list):
            raise DeltaError("splice insert must be a list")
        if index + remove > len(target):
            raise DeltaError(f"splice {index}+{remove} is beyond the array of {len(target)}")
        target[index : index + remove] = copy.deepcopy(insert)
        return root
    if not path:
        if kind == "unset":
            raise DeltaError("unset needs a path")
        if "value" not in op:
            raise DeltaError("set needs a value")
        return copy.deepcopy(op["value"])
    parent = _walk(root, path[:-1])
    last = path[-1]
    if kind == "set":
        if "value" not in op:
            raise DeltaError("set needs a value")
        if isinstance(last, str) and isinstance(parent, dict):
            parent[last] = copy.deepcopy(op["value"])
            return root
        _step(parent, last, path)  # raises unless the array element exists
        parent[last] = copy.deepcopy(op["value"])
        return root
    if not (isinstance(last, str) and isinstance(parent, dict) and last in parent):
        raise DeltaError(f"unset path {path!r} does not exist in the document")
    del parent[last]
    return root
