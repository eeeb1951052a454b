"""Reads: only what the caller may read, within the server's time limit."""

from __future__ import annotations

from typing import Any

from iapflow.contracts.storage import Document
from iapflow.secure import bounds
from iapflow.secure.acl import (
    READ,
)
from iapflow.secure.base import LayerBase
from iapflow.secure.pipeline import PipelineSecurer, parse_pipeline
from iapflow.secure.principal import Principal
from iapflow.wire import collection_name


class Reads(LayerBase):
    """``query``, ``count``, ``distinct``, ``aggregate``."""

    async def query(
        self,
        principal: Principal,
        collection: str,
        query: dict[str, Any],
        *,
        projection: dict[str, Any] | None = None,
        top: int = 100,
        skip: int = 0,
        orderby: list[tuple[str, int]] | None = None,
        queryas: Any = None,
    ) -> list[Document]:
        """Documents of ``collection`` matching ``query`` that the caller may read."""
        self._check_filter(principal, collection, query, projection)
        if orderby:
            bounds.check_sort(orderby)
            self._check_input(principal, {field: 1 for field, _direction in orderby})
        final = self._filter(
            principal, collection, READ, await self._queryas(collection, query, queryas)
        )
        docs = await self.storage.find(
            collection,
            final,
            projection=projection,
            sort=orderby,
            skip=skip,
            limit=top,
            max_time_ms=self.max_time_ms,
        )
        return [self._scrub(collection, d) for d in docs]

    async def count(
        self, principal: Principal, collection: str, query: dict[str, Any], queryas: Any = None
    ) -> int:
        """How many documents of ``collection`` match ``query`` and are readable."""
        self._check_filter(principal, collection, query)
        final = self._filter(
            principal, collection, READ, await self._queryas(collection, query, queryas)
        )
        return await self.storage.count(collection, final, max_time_ms=self.max_time_ms)

    async def distinct(
        self,
        principal: Principal,
        collection: str,
        field: str,
        query: dict[str, Any],
        queryas: Any = None,
    ) -> list[Any]:
        """Distinct values of ``field`` among readable matching documents."""
        self._check_filter(principal, collection, query)
        self._check_input(principal, {field: 1})
        final = self._filter(
            principal, collection, READ, await self._queryas(collection, query, queryas)
        )
        return await self.storage.distinct(collection, field, final, max_time_ms=self.max_time_ms)

    async def aggregate(
        self, principal: Principal, collection: str, pipeline: Any, queryas: Any = None
    ) -> list[Document]:
        """Run a pipeline over readable documents; joined collections are ACL-filtered too."""
        stages = parse_pipeline(pipeline)
        bounds.check_pipeline(stages)
        self._check_input(principal, stages, "the pipeline")
        secured = PipelineSecurer(principal, collection_name).secure(collection, stages)
        if queryas not in (None, ""):
            secured.insert(0, {"$match": await self._queryas(collection, {}, queryas)})
        return await self.storage.aggregate(collection, secured, max_time_ms=self.max_time_ms)
