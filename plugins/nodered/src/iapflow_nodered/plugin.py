"""The plugin entry point: agent runtimes ``process``, ``docker``, ``kubernetes`` and ``stub``.

The commands that use them (``ensurenoderedinstance``, ``startagent``...) are iapflow's own
(:mod:`iapflow.builtin.agents`), on the runtime contract."""

from __future__ import annotations

from collections.abc import Callable

from iapflow import hookimpl
from iapflow.contracts.agents import RuntimeFactory
from iapflow_nodered.docker import build_docker
from iapflow_nodered.kubernetes import build_kubernetes
from iapflow_nodered.process import build_process
from iapflow_nodered.stub import build_stub


@hookimpl
def register_agent_runtimes(register: Callable[[str, RuntimeFactory], None]) -> None:
    """Provide runtimes ``process`` (Node-RED from npm as local processes), ``docker``
    (containers through aiodocker), ``kubernetes`` (deployments through kubernetes-asyncio, an
    optional extra) and ``stub``."""
    register("process", build_process)
    register("docker", build_docker)
    register("kubernetes", build_kubernetes)
    register("stub", build_stub)
