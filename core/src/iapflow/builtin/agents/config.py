"""``[agents]``: the section of the agents package."""

from __future__ import annotations

from iapflow.config import BackendSection


class AgentsConfig(BackendSection):
    """``[agents]``: ``runtime`` names the agent runtime plugin (empty: no Node-RED instances);
    other keys belong to that runtime."""

    runtime: str = ""
