"""Bounded work: what one client request may ask of the store and of the server.

The embedded store runs client regexes with Python's ``re`` while it holds its one interpreter
lock, and a running match cannot be interrupted: one pattern that backtracks catastrophically
stalls every client of the store. The watch matcher runs ``$match`` regexes and JSONPath ``=~``
filters inside iapflow itself. So every client regex is checked here before it is used, and a
pattern that can backtrack catastrophically is refused with the rule it breaks:

- no backreferences (``\\1``, ``(?P=name)``, conditionals ``(?(1)...)``);
- a repeated group may not end in a variable repeat of characters that can also start the next
  repetition (``(a+)+``, ``([a-z]+\\s?)*``), and may not hold alternatives that can start alike
  (``(a|ab)+``);
- two unbounded repeats of overlapping characters may not follow each other with nothing
  required in between (``a*a*``, ``.*.*``, ``\\w+\\s*\\w+``);
- a pattern is at most :data:`MAX_PATTERN` characters; a regex in ``$regexMatch``,
  ``$regexFind`` and ``$regexFindAll`` must be written out, not taken from a field.

Possessive repeats (``a++``) and atomic groups (``(?>...)``) never backtrack into, so their
insides only have to pass the rules on their own. The check is deliberately strict: a few
harmless patterns are refused too; the error says which rule to rewrite around.

Besides regexes, the size of a filter, projection, sort or pipeline is bounded
(:func:`check_size`); the time a read may take in the store is ``[query] max_time_ms``, passed
by the data layer with every client read.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

from iapflow.errors import ApiError

MAX_PATTERN = 1000
MAX_KEYS = 2000
"""Fields and operators in one filter or pipeline (list items of plain values not counted)."""
MAX_PROJECTION = 256
MAX_SORT = 32
MAX_STAGES = 100
_OUTER_REPEAT = 10
"""A repeat with a bounded maximum of at most this many is not checked for nested repeats:
the work it can cause grows as a power of this number, not exponentially with the input."""
_REGEX_OPERATORS = ("$regexMatch", "$regexFind", "$regexFindAll")
_OPTION_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}
# The characters overlaps are tested on: Latin-1 and a few others with different classes.
_SAMPLE = (
    *(chr(i) for i in range(256)),
    *("\u0130", "\u03a3", "\u4e2d", "\u2028", "\u3000", "\u0663", "\U0001f600"),
)
_EMPTY: frozenset[str] = frozenset()


class RegexRefused(ApiError):
    """A client regex that could backtrack catastrophically, or that cannot be checked."""


@dataclass
class _Info:
    """What the checker knows of a piece of a pattern."""

    nullable: bool = True
    first: frozenset[str] = _EMPTY
    """Characters a non-empty match can start with."""
    chars: frozenset[str] = _EMPTY
    """Every character the piece can consume."""
    lead: frozenset[str] = _EMPTY
    """Characters of unbounded single-character repeats a match can start in (``a*``)."""
    trail: frozenset[str] = _EMPTY
    """Characters of unbounded single-character repeats a match can end in."""
    trail_variable: frozenset[str] = _EMPTY
    """Characters of variable-length repeats a match can end in."""
    variable: bool = False
    """The piece can match strings of different lengths."""
    single: bool = False
    """The piece is one character class (``a``, ``[a-z]``, ``.``)."""
    split: bool = False
    """A variable repeat inside can take characters that what follows it can start with, so
    a string can be split between them in more than one way."""


def _leaf(op: Any, av: Any, flags: int) -> frozenset[str]:
    """The sample characters one single-character item matches."""
    fold = bool(flags & re.IGNORECASE)

    def variants(ch: str) -> set[str]:
        return {ch, ch.lower(), ch.upper()} if fold else {ch}

    if op is sre.LITERAL:
        wanted = variants(chr(av))
        return frozenset(ch for ch in _SAMPLE if variants(ch) & wanted)
    if op is sre.NOT_LITERAL:
        unwanted = variants(chr(av))
        return frozenset(ch for ch in _SAMPLE if not variants(ch) & unwanted)
    if op is sre.ANY:
        return frozenset(ch for ch in _SAMPLE if flags & re.DOTALL or ch != "\n")
    if op is sre.IN:
        negate = False
        found: set[str] = set()
        for inner_op, inner_av in av:
            if inner_op is sre.NEGATE:
                negate = True
            elif inner_op is sre.RANGE:
                low, high = inner_av
                found.update(
                    ch for ch in _SAMPLE if any(low <= ord(v) <= high for v in variants(ch))
                )
            elif inner_op is sre.CATEGORY:
                found.update(ch for ch in _SAMPLE if _category(inner_av, ch))
            else:
                found.update(_leaf(inner_op, inner_av, flags))
        return frozenset(set(_SAMPLE) - found) if negate else frozenset(found)
    return frozenset(_SAMPLE)  # anything else consuming one character: assume any


def _category(category: Any, ch: str) -> bool:
    name = str(category).removeprefix("CATEGORY_").removeprefix("UNI_")
    if name.startswith("NOT_"):
        return not _category(name[4:], ch)
    if name == "DIGIT":
        return ch.isdecimal()
    if name == "SPACE":
        return ch.isspace()
    if name == "WORD":
        return ch.isalnum() or ch == "_"
    if name == "LINEBREAK":
        return ch == "\n"
    return True


class _Checker:
    """Walks a parsed pattern and collects the rules it breaks."""

    def __init__(self) -> None:
        self.broken: list[str] = []

    def sequence(self, items: Iterable[tuple[Any, Any]], flags: int) -> _Info:
        info = _Info()
        items = list(items)
        pending = _EMPTY  # unbounded single-character repeats the sequence may end in
        trail_variable = _EMPTY  # variable repeats the sequence may end in
        for op, av in items:
            item = self.item(op, av, flags)
            if item.lead & pending:
                self.broken.append(
                    "two unbounded repeats of the same characters follow each other with "
                    "nothing required in between (like a*a* or .*.*)"
                )
            if item.first & trail_variable:
                info.split = True
            if info.nullable:
                info.first |= item.first
                info.lead |= item.lead
            info.nullable = info.nullable and item.nullable
            if item.nullable:
                pending |= item.trail
                trail_variable |= item.trail_variable
            else:
                pending, trail_variable = item.trail, item.trail_variable
            info.chars |= item.chars
            info.variable = info.variable or item.variable
            info.split = info.split or item.split
        info.trail, info.trail_variable = pending, trail_variable
        info.single = len(items) == 1 and self.item(*items[0], flags).single
        return info

    def item(self, op: Any, av: Any, flags: int) -> _Info:
        if op in (sre.LITERAL, sre.NOT_LITERAL, sre.ANY, sre.IN):
            chars = _leaf(op, av, flags)
            return _Info(nullable=False, first=chars, chars=chars, single=True)
        if op is sre.AT:
            return _Info()
        if op in (sre.GROUPREF, sre.GROUPREF_EXISTS):
            self.broken.append("backreferences and conditionals on groups are not allowed")
            return _Info(variable=True)
        if op in (sre.ASSERT, sre.ASSERT_NOT):
            self.sequence(av[1], flags)  # zero-width, but it backtracks inside
            return _Info()
        if op is sre.SUBPATTERN:
            _group, add, remove, sub = av
            return self.sequence(sub, (flags | add) & ~remove)
        if op is sre.ATOMIC_GROUP:
            inner = self.sequence(av, flags)
            return _Info(
                nullable=inner.nullable, first=inner.first, chars=inner.chars,
                variable=inner.variable,
            )  # fmt: skip
        if op is sre.BRANCH:
            return self.branch(av[1], flags)
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            return self.repeat(op, av, flags)
        return _Info(nullable=False, first=frozenset(_SAMPLE), chars=frozenset(_SAMPLE))

    def branch(self, alternatives: list[Any], flags: int) -> _Info:
        infos = [self.sequence(alternative, flags) for alternative in alternatives]
        result = _Info(nullable=False)
        for info in infos:
            result.nullable = result.nullable or info.nullable
            result.first |= info.first
            result.chars |= info.chars
            result.lead |= info.lead
            result.trail |= info.trail
            result.trail_variable |= info.trail_variable
            result.split = result.split or info.split
        lengths = {(i.nullable, i.variable) for i in infos}
        result.variable = any(i.variable for i in infos) or len(lengths) > 1
        for index, one in enumerate(infos):
            for other in infos[index + 1 :]:
                if one.first & other.first or (one.nullable and other.nullable):
                    result.split = True  # two alternatives can take the same text
        return result

    def repeat(self, op: Any, av: Any, flags: int) -> _Info:
        low, high, sub = av
        body = self.sequence(sub, flags)
        unbounded = high == sre.MAXREPEAT
        checked = op is not sre.POSSESSIVE_REPEAT and (unbounded or high > _OUTER_REPEAT)
        if checked and (body.split or body.trail_variable & body.first):
            self.broken.append(
                "a repeated group can match the same text in more than one way (like "
                "(a+)+, (a|a)+ or (.*a){20}): it holds a repeat that can take what "
                "follows it, or alternatives that start alike"
            )
        info = _Info(
            nullable=body.nullable or low == 0,
            first=body.first,
            chars=body.chars,
            variable=body.variable or low != high,
            split=body.split,
        )
        if op is sre.POSSESSIVE_REPEAT:
            return info
        if high <= 1:  # an optional piece: what is inside stays at the edges
            info.lead, info.trail = body.lead, body.trail
            info.trail_variable = body.trail_variable | (body.chars if low == 0 else _EMPTY)
        else:
            info.trail_variable = body.chars if info.variable else body.trail_variable
            info.lead, info.trail = body.lead, body.trail
            if unbounded and body.single:
                info.lead = info.trail = body.chars
        return info


def _show(pattern: str) -> str:
    return repr(pattern if len(pattern) <= 80 else pattern[:77] + "...")


@functools.lru_cache(maxsize=2048)
def check_regex(pattern: str, flags: int = 0) -> None:
    """Refuse ``pattern`` (with ``re`` ``flags``) when it could backtrack catastrophically."""
    if len(pattern) > MAX_PATTERN:
        raise RegexRefused(
            f"regular expression {_show(pattern)} is refused: it is longer than "
            f"{MAX_PATTERN} characters"
        )
    try:
        parsed = sre_parse.parse(pattern, flags & ~re.UNICODE)
    except (re.error, OverflowError, RecursionError) as exc:
        raise RegexRefused(
            f"regular expression {_show(pattern)} cannot be checked, so it is refused: {exc}"
        ) from None
    checker = _Checker()
    checker.sequence(parsed, parsed.state.flags)
    if checker.broken:
        raise RegexRefused(
            f"regular expression {_show(pattern)} is refused because it could make the store "
            f"backtrack for minutes: {checker.broken[0]}. Rewrite it without that (a "
            "possessive repeat such as a++ or an atomic group (?>...) is allowed)"
        )


def option_flags(options: Any) -> int:
    """``re`` flags for MongoDB's ``$options`` letters (unknown letters are the store's to
    refuse)."""
    flags = 0
    if isinstance(options, str):
        for letter in options:
            flags |= _OPTION_FLAGS.get(letter, 0)
    return flags


def _check_pattern(value: Any, flags: int) -> None:
    if isinstance(value, re.Pattern):
        check_regex(value.pattern, value.flags | flags)
    elif isinstance(value, str):
        check_regex(value, flags)
    elif hasattr(value, "pattern") and isinstance(value.pattern, str):  # bson.Regex
        check_regex(value.pattern, option_flags(getattr(value, "flags", "")) | flags)


def check_regexes(value: Any) -> None:
    """Check every regex a filter, projection or pipeline holds: compiled patterns (from
    ``__REGEXP``), ``$regex`` with ``$options``, and the ``regex`` of ``$regexMatch``,
    ``$regexFind`` and ``$regexFindAll``, which must be written out."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, re.Pattern):
            _check_pattern(item, 0)
        elif isinstance(item, Mapping):
            if "$regex" in item:
                _check_pattern(item["$regex"], option_flags(item.get("$options")))
            for operator in _REGEX_OPERATORS:
                spec = item.get(operator)
                if isinstance(spec, Mapping):
                    regex = spec.get("regex")
                    if not isinstance(regex, str | re.Pattern) or (
                        isinstance(regex, str) and regex.startswith("$")
                    ):
                        raise RegexRefused(
                            f"{operator}: regex must be written out as a string, not taken "
                            "from a field or an expression"
                        )
                    _check_pattern(regex, option_flags(spec.get("options")))
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def count_keys(value: Any) -> int:
    """Fields and operators in a nested filter or pipeline."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            total += len(item)
            stack.extend(v for v in item.values() if isinstance(v, Mapping | list | tuple))
        elif isinstance(item, list | tuple):
            stack.extend(v for v in item if isinstance(v, Mapping | list | tuple))
    return total


def check_size(value: Any, what: str, limit: int = MAX_KEYS) -> None:
    """Refuse a filter or pipeline with more than ``limit`` fields and operators."""
    found = count_keys(value)
    if found > limit:
        raise ApiError(
            f"{what} has {found} fields and operators; at most {limit} are allowed in one request"
        )


def check_projection(projection: Mapping[str, Any] | None) -> None:
    """At most :data:`MAX_PROJECTION` fields in a projection."""
    if projection is not None and len(projection) > MAX_PROJECTION:
        raise ApiError(
            f"projection names {len(projection)} fields; at most {MAX_PROJECTION} are allowed"
        )
    if projection is not None:
        check_size(projection, "projection")


def check_sort(order: list[tuple[str, int]] | None) -> None:
    """At most :data:`MAX_SORT` sort keys (MongoDB's own limit)."""
    if order is not None and len(order) > MAX_SORT:
        raise ApiError(f"orderby names {len(order)} fields; at most {MAX_SORT} are allowed")


def check_pipeline(stages: list[Any]) -> None:
    """At most :data:`MAX_STAGES` stages and :data:`MAX_KEYS` fields and operators."""
    if len(stages) > MAX_STAGES:
        raise ApiError(f"the pipeline has {len(stages)} stages; at most {MAX_STAGES} are allowed")
    check_size(stages, "the pipeline")
