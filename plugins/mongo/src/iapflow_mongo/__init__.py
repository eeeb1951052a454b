"""iapflow-mongo: iapflow storage on MongoDB through pymongo's async client."""

from __future__ import annotations

__all__ = ["MongoStorage"]

from iapflow_mongo.storage import MongoStorage
