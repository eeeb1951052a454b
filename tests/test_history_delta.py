"""The JSON delta format of document history (iapflow.secure.delta), without a server: every
hand-made tricky pair must round-trip exactly, deltas must stay small, and broken deltas must
fail with a clear error instead of producing a wrong document."""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
import random
from typing import Any

import pytest

from iapflow.secure.delta import DeltaError, apply, diff, same


def exact(value: Any) -> str:
    """A text form that tells 1, 1.0 and true apart and ignores object key order."""

    def default(inner: Any) -> Any:
        return f"<{type(inner).__name__} {inner!r}>"

    return json.dumps(value, sort_keys=True, default=default)


DATE = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)

PAIRS: list[tuple[str, Any, Any]] = [
    ("equal", {"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 1}),
    ("add key", {"a": 1}, {"a": 1, "b": {"c": [1]}}),
    ("remove key", {"a": 1, "b": 2}, {"a": 1}),
    ("change leaf", {"a": 1}, {"a": 2}),
    ("int to float", {"a": 1}, {"a": 1.0}),
    ("int to bool", {"a": 1}, {"a": True}),
    ("bool to int", {"a": False}, {"a": 0}),
    ("null to missing", {"a": None}, {}),
    ("missing to null", {}, {"a": None}),
    ("empty string vs null", {"a": ""}, {"a": None}),
    ("object to array", {"a": {"0": 1}}, {"a": [1]}),
    ("array to object", {"a": [1]}, {"a": {"0": 1}}),
    ("scalar to object", {"a": 5}, {"a": {"b": 5}}),
    ("nested change", {"a": {"b": {"c": 1, "d": 2}}}, {"a": {"b": {"c": 1, "d": 3}}}),
    ("nested remove", {"a": {"b": {"c": 1, "d": 2}}}, {"a": {"b": {"c": 1}}}),
    ("array append", {"a": [1, 2]}, {"a": [1, 2, 3]}),
    ("array prepend", {"a": [1, 2]}, {"a": [0, 1, 2]}),
    ("array insert middle", {"a": [1, 3]}, {"a": [1, 2, 3]}),
    ("array remove middle", {"a": [1, 2, 3]}, {"a": [1, 3]}),
    ("array clear", {"a": [1, 2, 3]}, {"a": []}),
    ("array from empty", {"a": []}, {"a": [[], {}]}),
    ("array reverse", {"a": [1, 2, 3, 4]}, {"a": [4, 3, 2, 1]}),
    ("array repeated values", {"a": [1, 1, 1]}, {"a": [1, 1]}),
    ("array element field", {"a": [{"x": 1}, {"x": 2}]}, {"a": [{"x": 1}, {"x": 3}]}),
    ("array of arrays", {"a": [[1, 2], [3]]}, {"a": [[1], [3, 4], []]}),
    ("array element type", {"a": [1, "1"]}, {"a": ["1", 1]}),
    ("array bool vs int", {"a": [True, 1]}, {"a": [1, True]}),
    ("dotted and numeric keys", {"a.b": 1, "0": [1]}, {"a.b": 2, "0": [1, {"1": 2}]}),
    ("unicode keys", {"ключ": "é"}, {"ключ": "ü", "🔑": ["☃"]}),
    ("empty key", {"": 1}, {"": {"": 2}}),
    ("dates", {"d": DATE}, {"d": DATE + dt.timedelta(milliseconds=1), "e": DATE}),
    ("big numbers", {"n": 2**62}, {"n": -(2**62), "f": 1e308}),
    ("floats", {"f": 0.1}, {"f": 0.30000000000000004}),
    ("nan stays", {"f": float("nan")}, {"f": float("nan"), "g": 1}),
    (
        "deep",
        {"a": {"b": {"c": {"d": {"e": [1, {"f": 1}]}}}}},
        {"a": {"b": {"c": {"d": {"e": [1, {"f": 2}]}}}}},
    ),
    (
        "document like",
        {
            "_id": "x",
            "_acl": [{"_id": "u1", "rights": 65535}, {"_id": "r", "rights": 2}],
            "_version": 3,
            "name": "n",
            "tags": ["a", "b"],
        },
        {
            "_id": "x",
            "_acl": [{"_id": "u1", "rights": 65535}],
            "_version": 4,
            "name": "n2",
            "tags": ["a", "b", "c"],
            "address": {"city": "Oslo"},
        },
    ),
]


@pytest.mark.parametrize(("old", "new"), [p[1:] for p in PAIRS], ids=[p[0] for p in PAIRS])
def test_pairs_round_trip_exactly(old: Any, new: Any) -> None:
    old_copy, new_copy = copy.deepcopy(old), copy.deepcopy(new)
    delta = diff(old, new)
    assert exact(apply(old, delta)) == exact(new)
    # Neither input was touched, and the delta survives a JSON round trip (dates aside).
    assert exact(old) == exact(old_copy) and exact(new) == exact(new_copy)
    if not any(isinstance(v, dt.datetime) for v in (*old.values(), *new.values())):
        assert exact(apply(old, json.loads(json.dumps(delta)))) == exact(new)


@pytest.mark.parametrize(("old", "new"), [p[1:] for p in PAIRS], ids=[p[0] for p in PAIRS])
def test_reverse_pairs_round_trip_exactly(old: Any, new: Any) -> None:
    assert exact(apply(new, diff(new, old))) == exact(old)


def test_equal_documents_give_an_empty_delta() -> None:
    assert diff({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2}]}) == []
    assert diff({"a": 1, "b": 2}, {"b": 2, "a": 1}) == []  # key order does not count
    assert diff({"f": float("nan")}, {"f": float("nan")}) == []


def test_deltas_are_small_and_readable() -> None:
    assert diff({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}) == [
        {"op": "set", "path": ["a", "c"], "value": 3}
    ]
    assert diff({"a": 1, "b": 2}, {"a": 1}) == [{"op": "unset", "path": ["b"]}]
    big = list(range(1000))
    assert diff({"l": big}, {"l": [*big[:500], -1, *big[500:]]}) == [
        {"op": "splice", "path": ["l"], "index": 500, "remove": 0, "insert": [-1]}
    ]
    people = [{"name": f"p{i}", "age": i} for i in range(50)]
    changed = copy.deepcopy(people)
    changed[20]["age"] = 99
    assert diff({"p": people}, {"p": changed}) == [
        {"op": "set", "path": ["p", 20, "age"], "value": 99}
    ]
    assert diff({"a": 1}, {"a": True}) == [{"op": "set", "path": ["a"], "value": True}]


def test_non_document_roots_round_trip() -> None:
    for old, new in [(1, "x"), ([1, 2], [2]), (None, {"a": 1}), ({"a": 1}, [1])]:
        assert exact(apply(old, diff(old, new))) == exact(new)


def test_same_is_json_equality() -> None:
    assert same({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]})
    assert not same(1, 1.0) and not same(1, True) and not same(0, False) and not same(None, 0)
    assert not same([1, 2], [2, 1]) and not same({"a": 1}, {"a": 1, "b": 1})
    assert same(DATE, DATE.astimezone(dt.timezone(dt.timedelta(hours=2))))


def _random_value(rng: random.Random, depth: int) -> Any:
    choice = rng.randrange(10 if depth < 4 else 6)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.randrange(-3, 4)
    if choice == 3:
        return rng.choice([0.5, 1.0, -2.25])
    if choice in (4, 5):
        return rng.choice(["", "a", "b", "1"])
    if choice in (6, 7):
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {rng.choice("abcde"): _random_value(rng, depth + 1) for _ in range(rng.randrange(5))}


def _mutate(rng: random.Random, value: Any, depth: int = 0) -> Any:
    if isinstance(value, dict) and value and rng.random() < 0.7:
        result = dict(value)
        key = rng.choice(list(result))
        action = rng.randrange(3)
        if action == 0:
            del result[key]
        elif action == 1:
            result[key] = _mutate(rng, result[key], depth + 1)
        else:
            result[rng.choice("abcdef")] = _random_value(rng, depth + 1)
        return result
    if isinstance(value, list) and value and rng.random() < 0.7:
        result_list = list(value)
        index = rng.randrange(len(result_list))
        action = rng.randrange(3)
        if action == 0:
            del result_list[index]
        elif action == 1:
            result_list[index] = _mutate(rng, result_list[index], depth + 1)
        else:
            result_list.insert(index, _random_value(rng, depth + 1))
        return result_list
    return _random_value(rng, depth)


def test_random_edit_chains_rebuild_every_version() -> None:
    # A fixed-seed stand-in for property testing: chains of random edits of random documents,
    # each version rebuilt from the first by applying every delta in order.
    rng = random.Random(20261129)
    for _chain in range(200):
        versions = [{"root": _random_value(rng, 0)}]
        for _step in range(8):
            versions.append(_mutate(rng, versions[-1]))
        deltas = [diff(a, b) for a, b in itertools.pairwise(versions)]
        rebuilt = versions[0]
        for expected, delta in zip(versions[1:], deltas, strict=True):
            rebuilt = apply(rebuilt, delta)
            assert exact(rebuilt) == exact(expected)


def test_apply_does_not_share_values_with_the_delta() -> None:
    delta = diff({}, {"a": {"b": [1]}})
    first = apply({}, delta)
    first["a"]["b"].append(2)
    assert apply({}, delta) == {"a": {"b": [1]}}


@pytest.mark.parametrize(
    ("doc", "delta", "message"),
    [
        ({}, {"op": "set"}, "list of operations"),
        ({}, ["set"], "not an operation"),
        ({}, [{"op": "move", "path": ["a"]}], "not an operation"),
        ({}, [{"op": "set", "path": "a", "value": 1}], "path must be a list"),
        ({}, [{"op": "set", "path": [True], "value": 1}], "path must be a list"),
        ({}, [{"op": "set", "path": ["a", "b"], "value": 1}], "does not exist"),
        ({"a": [1]}, [{"op": "set", "path": ["a", 1], "value": 1}], "does not exist"),
        ({"a": [1]}, [{"op": "set", "path": ["a", "0"], "value": 1}], "does not exist"),
        ({"a": {}}, [{"op": "set", "path": ["a", 0], "value": 1}], "does not exist"),
        ({}, [{"op": "set", "path": ["a"]}], "needs a value"),
        ({}, [{"op": "unset", "path": ["a"]}], "does not exist"),
        ({}, [{"op": "unset", "path": []}], "needs a path"),
        (
            {"a": 1},
            [{"op": "splice", "path": ["a"], "index": 0, "remove": 0, "insert": []}],
            "not an array",
        ),
        (
            {"a": [1]},
            [{"op": "splice", "path": ["a"], "index": 1, "remove": 1, "insert": []}],
            "beyond",
        ),
        (
            {"a": [1]},
            [{"op": "splice", "path": ["a"], "index": -1, "remove": 0, "insert": []}],
            "non-negative",
        ),
        (
            {"a": [1]},
            [{"op": "splice", "path": ["a"], "index": 0, "remove": 0, "insert": 5}],
            "insert must be a list",
        ),
    ],
)
def test_broken_deltas_fail_clearly(doc: Any, delta: Any, message: str) -> None:
    before = copy.deepcopy(doc)
    with pytest.raises(DeltaError, match=message):
        apply(doc, delta)
    assert doc == before
