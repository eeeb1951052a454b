"""The ``stub`` agent runtime: instances that live in memory only, for fast platform tests.

An instance is ``starting`` right after ``ensure`` and ``running`` after ``start_delay`` seconds
(default 0). An instance whose name starts with ``stubfailstart`` crashes instead, so error paths
can be tested. Logs are a few canned lines per state change. Nothing runs and nothing survives
the server.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from iapflow.contracts.agents import (
    InstanceNotFound,
    InstanceSpec,
    InstanceStatus,
    RuntimeContext,
    absent,
    poll_until_ready,
    statuses,
)
from iapflow.errors import ConfigError

FAIL_START_PREFIX = "stubfailstart"


@dataclass
class _StubInstance:
    spec: InstanceSpec
    state: str = "starting"
    ready_at: float = 0.0
    restarts: int = 0
    log: list[str] = field(default_factory=list)


class StubRuntime:
    """In-memory runtime; see the module docstring."""

    name = "stub"

    def __init__(self, start_delay: float = 0.0) -> None:
        self.start_delay = start_delay
        self._instances: dict[str, _StubInstance] = {}

    async def start(self) -> None:
        """Nothing to open."""

    async def stop(self) -> None:
        """Nothing to close; instances stay in memory."""

    def _get(self, name: str) -> _StubInstance:
        instance = self._instances.get(name)
        if instance is None:
            raise InstanceNotFound(f"no Node-RED instance named {name!r}")
        return instance

    def _launch(self, instance: _StubInstance) -> None:
        instance.state = "starting"
        instance.ready_at = time.monotonic() + self.start_delay
        instance.log.append(f"{time.strftime('%d %b %H:%M:%S')} - [info] Starting flows")

    def _settle(self, instance: _StubInstance) -> None:
        if instance.state == "starting" and time.monotonic() >= instance.ready_at:
            if instance.spec.name.startswith(FAIL_START_PREFIX):
                instance.state = "crashed"
                instance.log.append("[error] stub instance failed to start (by its name)")
            else:
                instance.state = "running"
                instance.log.append("[info] Started flows")

    def _status(self, instance: _StubInstance) -> InstanceStatus:
        self._settle(instance)
        spec = instance.spec
        return InstanceStatus(
            name=spec.name,
            state=instance.state,
            owner_id=spec.owner_id,
            url=f"stub://{spec.name}" if instance.state == "running" else "",
            restarts=instance.restarts,
            reason="failed to start" if instance.state == "crashed" else "",
        )

    async def ensure(self, spec: InstanceSpec) -> InstanceStatus:
        """Create the instance, or start it again if it is stopped or crashed."""
        instance = self._instances.get(spec.name)
        if instance is None:
            instance = self._instances[spec.name] = _StubInstance(spec)
            self._launch(instance)
        else:
            instance.spec = spec
            if instance.state in ("stopped", "crashed"):
                self._launch(instance)
        return self._status(instance)

    async def start_instance(self, name: str) -> InstanceStatus:
        """Start a stopped instance."""
        instance = self._get(name)
        if instance.state in ("stopped", "crashed"):
            self._launch(instance)
        return self._status(instance)

    async def stop_instance(self, name: str) -> InstanceStatus:
        """Mark the instance stopped."""
        instance = self._get(name)
        instance.state = "stopped"
        instance.log.append("[info] Stopped flows")
        return self._status(instance)

    async def restart(self, name: str) -> InstanceStatus:
        """Stop and start."""
        instance = self._get(name)
        instance.restarts += 1
        self._launch(instance)
        return self._status(instance)

    async def remove(self, name: str) -> bool:
        """Forget the instance."""
        return self._instances.pop(name, None) is not None

    async def status(self, name: str) -> InstanceStatus:
        """The instance's state, ``absent`` if unknown."""
        instance = self._instances.get(name)
        if instance is None:
            return absent(name)
        return self._status(instance)

    async def list(self) -> list[InstanceStatus]:
        """Every instance."""
        return await statuses(self, list(self._instances))

    async def wait_ready(self, name: str, within: float = 60.0) -> InstanceStatus:
        """Sleep until the start delay has passed."""
        return await poll_until_ready(self, name, within, interval=0.01)

    async def logs(self, name: str, lines: int = 50) -> str:
        """The canned log lines."""
        return "\n".join(self._get(name).log[-lines:])

    async def node_labels(self) -> dict[str, dict[str, str]] | None:
        """No nodes."""
        return None


def build_stub(options: Mapping[str, Any], context: RuntimeContext) -> StubRuntime:
    """The ``stub`` runtime's factory; its one option is ``start_delay`` (seconds)."""
    unknown = set(options) - {"start_delay"}
    if unknown:
        raise ConfigError(f"agents.{sorted(unknown)[0]}", "not an option of the stub runtime")
    delay = options.get("start_delay", 0.0)
    if not isinstance(delay, int | float) or delay < 0:
        raise ConfigError("agents.start_delay", "must be a number of seconds >= 0")
    return StubRuntime(float(delay))
