"""What a watch selects: JSONPath ``paths`` and the legacy ``[{"$match": {...}}]`` form.

As in OpenFlow, each JSONPath is evaluated against ``{"a": document}`` with the document in its
JSON form (dates as ISO strings), so ``$.[?(@._type == 'workflow')]`` selects workflow documents
and ``$.a.priority`` selects documents that have a ``priority``; the event passes when any path
finds something. JSONPath-plus's ``$.[`` spelling is accepted as ``$[``. ``$match`` stages are
MongoDB filters (see :mod:`iapflow.builtin.watch.match`); all of them must pass. A watch with
neither passes every event.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonpath_ng.ext.parser import parse as parse_jsonpath

from iapflow.builtin.watch.match import Predicate, compile_match
from iapflow.errors import ApiError
from iapflow.secure import bounds
from iapflow.wire import coerce

MAX_PATHS = 32
MAX_PATH_LENGTH = 1024


@dataclass
class WatchFilter:
    """The compiled selection of one watch."""

    paths: list[Any] = field(default_factory=list)
    """Compiled JSONPath expressions; any hit passes."""
    matches: list[Predicate] = field(default_factory=list)
    """Compiled ``$match`` filters; all must pass."""
    sources: list[Any] = field(default_factory=list)
    """What the client sent, for display."""

    @property
    def everything(self) -> bool:
        """True when the watch passes every event."""
        return not self.paths and not self.matches

    def passes(self, document: Mapping[str, Any], plain: Any) -> bool:
        """Does the document pass? ``plain`` is its JSON form, for the JSONPath expressions."""
        if not all(match(document) for match in self.matches):
            return False
        if not self.paths:
            return True
        wrapped = {"a": plain}
        for expression in self.paths:
            try:
                if expression.find(wrapped):
                    return True
            except Exception:  # a filter comparing mismatched types: no hit, as in JavaScript
                continue
        return False


def normalise_jsonpath(text: str) -> str:
    """Turn JSONPath-plus's ``.[`` (child bracket after a dot) into ``[``, outside quotes."""
    out: list[str] = []
    quote = ""
    i = 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\" and i + 1 < len(text):
                out.append(text[i : i + 2])
                i += 2
                continue
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "." and text[i + 1 : i + 2] == "[" and (i == 0 or text[i - 1] != "."):
            i += 1
            continue
        out.append(char)
        i += 1
    return "".join(out)


def compile_jsonpath(text: Any, where: str) -> Any:
    """Compile one JSONPath string; ApiError with the parser's reason when it is not valid."""
    if not isinstance(text, str) or not text.strip():
        raise ApiError(f"{where} must be a non-empty JSONPath string")
    if len(text) > MAX_PATH_LENGTH:
        raise ApiError(f"{where} is longer than {MAX_PATH_LENGTH} characters")
    try:
        compiled = parse_jsonpath(normalise_jsonpath(text.strip()))
    except Exception as exc:  # lexer and parser errors, and PLY's own
        reason = str(exc).strip() or type(exc).__name__
        raise ApiError(f"{where} is not valid JSONPath ({text[:80]!r}): {reason}") from None
    _check_jsonpath_regexes(compiled, where)
    return compiled


def _check_jsonpath_regexes(compiled: Any, where: str) -> None:
    """``=~`` filters run in this server for every event: their patterns must be written out
    and pass :func:`iapflow.secure.bounds.check_regex`."""
    stack = [compiled]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, list | tuple):
            stack.extend(node)
            continue
        if not type(node).__module__.startswith("jsonpath_ng"):
            continue
        if getattr(node, "op", None) == "=~":
            pattern = getattr(node, "value", None)
            if not isinstance(pattern, str):
                raise ApiError(f"{where}: the pattern after =~ must be a quoted string")
            bounds.check_regex(pattern)
        stack.extend(vars(node).values())


def _as_list(value: Any, field_name: str) -> list[Any]:
    if value is None or value == "" or value == []:
        return []
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith(("[", "{")):
            try:
                value = json.loads(stripped)
            except ValueError:
                raise ApiError(f"{field_name} is not valid JSON") from None
        else:
            return [value]  # one JSONPath
    if isinstance(value, Mapping):
        return [value]
    if not isinstance(value, list):
        raise ApiError(f"{field_name} must be a list of JSONPath strings or $match stages")
    return value


def parse_watch_filter(paths: Any, aggregates: Any) -> WatchFilter:
    """Build the filter from a ``watch`` request's ``paths`` and ``aggregates`` fields.

    Each may hold JSONPath strings and ``{"$match": {...}}`` stages (OpenFlow clients send
    either in either field), as a list, a single item, or a JSON string of those.
    """
    result = WatchFilter()
    items = [("paths", i, v) for i, v in enumerate(_as_list(paths, "paths"))]
    items += [("aggregates", i, v) for i, v in enumerate(_as_list(aggregates, "aggregates"))]
    if len(items) > MAX_PATHS:
        raise ApiError(f"a watch takes at most {MAX_PATHS} paths and $match stages")
    for field_name, index, item in items:
        where = f"{field_name}[{index}]"
        if isinstance(item, str):
            result.paths.append(compile_jsonpath(item, where))
        elif isinstance(item, Mapping):
            if list(item) != ["$match"]:
                stage = next(iter(item), "{}")
                raise ApiError(
                    f'{where}: only {{"$match": {{...}}}} stages can filter a watch, not {stage!r}'
                )
            selection = coerce(item["$match"])
            bounds.check_regexes(selection)
            bounds.check_size(selection, f"{where}.$match")
            result.matches.append(compile_match(selection, f"{where}.$match"))
        else:
            raise ApiError(f'{where} must be a JSONPath string or a {{"$match": ...}} stage')
        result.sources.append(item)
    return result
