"""Securing aggregation pipelines: the ACL applies to every collection a pipeline reads.

OpenFlow filters only the first collection; here ``$lookup``, ``$graphLookup`` and
``$unionWith`` (also inside ``$facet`` and nested pipelines) read only documents the caller may
read, and ``passwordhash`` never leaves ``users``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from iapflow.errors import AccessDenied, ApiError
from iapflow.secure.acl import READ, acl_condition, acl_expression, acl_field, fold
from iapflow.secure.guards import SECRET_FIELDS
from iapflow.secure.principal import Principal

HIDE_SECRETS: dict[str, Any] = {"$project": {"passwordhash": 0}}


def parse_pipeline(value: Any) -> list[dict[str, Any]]:
    """``aggregates`` as a list of stages or one stage object."""
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ApiError("aggregates must be a pipeline: a list of stages")
    for stage in value:
        if not isinstance(stage, dict) or len(stage) != 1 or not next(iter(stage)).startswith("$"):
            raise ApiError(
                f"each pipeline stage must be an object with one $operator, got {stage!r}"[:300]
            )
    return value


class PipelineSecurer:
    """Rewrites a pipeline so that each collection it reads is ACL-filtered for ``principal``."""

    def __init__(self, principal: Principal, resolve: Callable[[str], str]) -> None:
        self.principal = principal
        self.resolve = resolve

    def _match(self, collection: str) -> dict[str, Any] | None:
        if self.principal.is_admin:
            return None
        return {acl_field(collection): acl_condition(self.principal.ids, READ)}

    def secure(self, collection: str, pipeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The pipeline for the top-level ``collection``, with its ACL stage first.

        When the pipeline starts with ``$match`` the ACL is folded into it, so that indexes on
        the user's fields still apply. On ``users`` the secrets are projected away before any
        client stage instead: a ``$match`` with ``$expr`` could otherwise read them.
        """
        if collection == "users":
            return self._sub(collection, pipeline)
        body = self._stages(pipeline)
        match = self._match(collection)
        if match is None:
            return body
        if body and isinstance(body[0].get("$match"), Mapping):
            return [{"$match": fold(body[0]["$match"], match)}, *body[1:]]
        return [{"$match": match}, *body]

    def _sub(self, collection: str, pipeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
        head: list[dict[str, Any]] = []
        match = self._match(collection)
        if match is not None:
            head.append({"$match": match})
        if collection == "users":
            head.append(HIDE_SECRETS)
        return head + self._stages(pipeline)

    def _check_join_field(self, source: str, spec: Mapping[str, Any], *keys: str) -> None:
        # A join matches on stored fields before any stage of ours runs.
        if source != "users":
            return
        for key in keys:
            value = spec.get(key)
            if isinstance(value, str) and value.split(".")[0] in SECRET_FIELDS:
                raise AccessDenied(f"joins may not match on {value}")

    def _stages(self, pipeline: Any) -> list[dict[str, Any]]:
        if not isinstance(pipeline, list):
            raise ApiError("a nested pipeline must be a list of stages")
        out: list[dict[str, Any]] = []
        for stage in pipeline:
            if not isinstance(stage, dict) or len(stage) != 1:
                raise ApiError("each pipeline stage must be an object with one $operator")
            ((name, spec),) = stage.items()
            if name == "$lookup":
                out.append({"$lookup": self._lookup(spec)})
            elif name == "$unionWith":
                out.append({"$unionWith": self._union(spec)})
            elif name == "$graphLookup":
                out.extend(self._graph(spec))
            elif name == "$facet":
                if not isinstance(spec, dict):
                    raise ApiError("$facet takes an object of pipelines")
                out.append({"$facet": {k: self._stages(v) for k, v in spec.items()}})
            else:
                out.append(stage)
        return out

    def _from(self, spec: Mapping[str, Any], key: str) -> str:
        value = spec.get(key)
        if not isinstance(value, str) or not value:
            raise ApiError(f"pipeline stage needs {key!r} naming a collection")
        return self.resolve(value)

    def _lookup(self, spec: Any) -> dict[str, Any]:
        if not isinstance(spec, dict):
            raise ApiError("$lookup takes an object")
        source = self._from(spec, "from")
        self._check_join_field(source, spec, "foreignField")
        secured = dict(spec, **{"from": source})
        secured["pipeline"] = self._sub(source, spec.get("pipeline", []))
        return secured

    def _union(self, spec: Any) -> dict[str, Any]:
        if isinstance(spec, str):
            spec = {"coll": spec}
        if not isinstance(spec, dict):
            raise ApiError("$unionWith takes a collection name or an object")
        source = self._from(spec, "coll")
        return dict(spec, coll=source, pipeline=self._sub(source, spec.get("pipeline", [])))

    def _graph(self, spec: Any) -> list[dict[str, Any]]:
        if not isinstance(spec, dict):
            raise ApiError("$graphLookup takes an object")
        source = self._from(spec, "from")
        self._check_join_field(source, spec, "connectToField", "connectFromField")
        secured = dict(spec, **{"from": source})
        output = spec.get("as")
        if not isinstance(output, str) or not output or output.startswith("$"):
            raise ApiError("$graphLookup needs 'as' naming the output field")
        if self.principal.is_admin:
            if source == "users":  # admins too never get password hashes
                return [{"$graphLookup": secured}, _drop_secrets_from_array(output)]
            return [{"$graphLookup": secured}]
        if source == "users":
            raise AccessDenied("$graphLookup into users may only be used by admins")
        restrict = spec.get("restrictSearchWithMatch") or {}
        if not isinstance(restrict, dict):
            raise ApiError("restrictSearchWithMatch must be an object")
        match = self._match(source) or {}
        secured["restrictSearchWithMatch"] = fold(restrict, match)
        # Also filter the output array, for stores that ignore restrictSearchWithMatch.
        keep = acl_expression(self.principal.ids, READ, "$$this." + acl_field(source))
        return [
            {"$graphLookup": secured},
            {"$addFields": {output: {"$filter": {"input": "$" + output, "cond": keep}}}},
        ]


def _drop_secrets_from_array(field: str) -> dict[str, Any]:
    """A stage removing :data:`SECRET_FIELDS` from each document in the array ``field``.

    Written with ``$objectToArray`` rather than a dotted ``$project`` exclusion, which not
    every MongoDB-compatible store applies inside arrays.
    """
    keep = {"$not": [{"$in": ["$$kv.k", sorted(SECRET_FIELDS)]}]}
    without = {
        "$arrayToObject": {
            "$filter": {"input": {"$objectToArray": "$$doc"}, "as": "kv", "cond": keep}
        }
    }
    return {"$addFields": {field: {"$map": {"input": "$" + field, "as": "doc", "in": without}}}}
