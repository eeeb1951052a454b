"""``[housekeeping]``: the section of the admin package."""

from __future__ import annotations

from pydantic import Field

from iapflow.config import Section


class HousekeepingConfig(Section):
    """``[housekeeping]``: the periodic check of built-in roles, indexes and stale sessions."""

    interval_seconds: float = Field(900, ge=0)
