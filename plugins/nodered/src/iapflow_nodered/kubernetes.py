"""The ``kubernetes`` agent runtime: each Node-RED instance is a Deployment with a Service and an
Ingress rule, through kubernetes-asyncio (``pip install 'iapflow-nodered[kubernetes]'``).

Each object is named after the instance, lives in the configured namespace and carries the
labels ``app``, ``openiap.io/instance``, ``openiap.io/managed-by=iapflow`` and ``userid``. The
Deployment runs one replica of the image with the instance's env, memory and CPU requests and
limits, a readiness and a liveness probe on Node-RED's ``/auth/login`` and the node selector;
the Service reaches port 1880; the Ingress routes ``<name>.<domain>`` to it; a Secret holds the
owner's token, which the container reads as ``jwt``. Stop scales to 0 and start to 1; restart
rolls the pods; delete removes every object. iapflow keeps no state of its own: a restarted
server finds its deployments by label, and it refuses to touch a deployment of the same name it
did not create. Status is read from the Deployment and its pods, so an image that cannot be
pulled shows as ``crashed`` with the kubelet's reason.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
from collections.abc import Awaitable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp

from iapflow.contracts.agents import (
    AgentRuntimeError,
    InstanceNotFound,
    InstanceSpec,
    InstanceStatus,
    RuntimeContext,
    absent,
    poll_until_ready,
    statuses,
)
from iapflow.errors import ApiError, ConfigError
from iapflow_nodered.kube_objects import (
    CONTAINER,
    INSTANCE_LABEL,
    MANAGED_BY,
    KubeObjects,
    iso,
)

OPTIONS: dict[str, Any] = {
    "kubeconfig": "",
    "context": "",
    "url": "",
    "namespace": "iapflow",
    "image": "nodered/node-red:4.1",
    "image_pull_policy": "IfNotPresent",
    "api_ws_url": "",
    "domain": "localhost",
    "ingress": True,
    "ingress_class": "",
    "tls_secret": "",
    "service_type": "ClusterIP",
    "memory_mb": 256,
    "memory_headroom_mb": 128,
    "cpu_request": "100m",
    "cpu_limit": "",
    "probe_path": "/auth/login",
    "liveness_initial_delay_seconds": 60,
    "node_selector": {},
    "poll_seconds": 1.0,
}
RESTARTED_AT = "iapflow.io/restartedAt"
TIMEOUT = 15.0


def _client() -> Any:
    """kubernetes_asyncio.client, imported when first needed (it is an optional extra)."""
    return importlib.import_module("kubernetes_asyncio.client")


class KubernetesRuntime:
    """Node-RED instances as Kubernetes deployments; see the module docstring."""

    name = "kubernetes"

    def __init__(self, options: dict[str, Any], context: RuntimeContext) -> None:
        self.options = {**OPTIONS, **options}
        self.context = context
        self.namespace = str(self.options["namespace"])
        self.objects = KubeObjects(self.options, context)
        self._api: Any = None
        self._host = ""

    # -- connection ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the credentials (``url``, a kubeconfig, or the pod's service account) and open
        the client; a server that cannot reach the cluster still starts."""
        client = _client()
        config: Any = importlib.import_module("kubernetes_asyncio.config")
        configuration = client.Configuration()
        kubeconfig = str(self.options["kubeconfig"])
        try:
            if self.options["url"]:
                configuration.host = str(self.options["url"])
            elif kubeconfig == "in-cluster" or (
                not kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST")
            ):
                config.load_incluster_config(client_configuration=configuration)
            else:
                await config.load_kube_config(
                    config_file=kubeconfig or None,
                    context=str(self.options["context"]) or None,
                    client_configuration=configuration,
                )
        except (config.ConfigException, OSError) as exc:
            where = kubeconfig or "~/.kube/config (or the in-cluster service account)"
            raise ConfigError(
                "agents.kubeconfig", f"cannot load Kubernetes credentials from {where}: {exc}"
            ) from exc
        self._host = str(configuration.host)
        self._api = client.ApiClient(configuration)

    async def stop(self) -> None:
        """Close the client; deployments keep running."""
        if self._api is not None:
            await self._api.close()
            self._api = None

    def _apis(self) -> tuple[Any, Any, Any]:
        if self._api is None:
            raise AgentRuntimeError("the kubernetes runtime is not started")
        client = _client()
        return (
            client.AppsV1Api(self._api),
            client.CoreV1Api(self._api),
            client.NetworkingV1Api(self._api),
        )

    async def _call(self, what: str, call: Awaitable[Any], missing_ok: bool = False) -> Any:
        """Await one API call, turning its failures into errors a user can act on; with
        ``missing_ok`` a 404 gives None."""
        api_exception = _client().ApiException
        try:
            return await call
        except api_exception as exc:
            if exc.status == 404 and missing_ok:
                return None
            raise self._error(what, exc) from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise AgentRuntimeError(
                f"cannot reach the Kubernetes API at {self._host} to {what}: {exc}"
            ) from exc

    def _error(self, what: str, exc: Any) -> AgentRuntimeError:
        message = str(exc.reason or "")
        with contextlib.suppress(TypeError, ValueError, AttributeError):
            message = json.loads(exc.body).get("message") or message
        if exc.status == 401:
            return AgentRuntimeError(
                f"Kubernetes did not accept iapflow's credentials to {what} (401): {message}; "
                "check [agents] kubeconfig"
            )
        if exc.status == 403:
            return AgentRuntimeError(
                f"Kubernetes refused to {what} (403 Forbidden): {message}; iapflow's service "
                f"account needs rights on deployments, services, ingresses, pods and pods/log "
                f"in namespace {self.namespace!r} (and list on nodes for node labels)"
            )
        return AgentRuntimeError(f"Kubernetes could not {what} ({exc.status}): {message}")

    # -- reading ------------------------------------------------------------------------------

    async def _deployment(self, name: str) -> Any:
        """The instance's Deployment, None when there is none."""
        apps, _core, _net = self._apis()
        deployment = await self._call(
            f"read deployment {name}",
            apps.read_namespaced_deployment(name, self.namespace, _request_timeout=TIMEOUT),
            missing_ok=True,
        )
        if deployment is not None:
            labels = deployment.metadata.labels or {}
            if labels.get(MANAGED_BY) != "iapflow":
                raise AgentRuntimeError(
                    f"deployment {name!r} exists in namespace {self.namespace!r} but iapflow "
                    "did not create it"
                )
        return deployment

    async def _existing(self, name: str) -> Any:
        deployment = await self._deployment(name)
        if deployment is None:
            raise InstanceNotFound(f"no Node-RED instance named {name!r}")
        return deployment

    async def _pods(self, name: str) -> list[Any]:
        _apps, core, _net = self._apis()
        found = await self._call(
            f"list the pods of {name}",
            core.list_namespaced_pod(
                self.namespace, label_selector=f"{INSTANCE_LABEL}={name}", _request_timeout=TIMEOUT
            ),
        )
        return list(found.items or [])

    # -- changing -----------------------------------------------------------------------------

    async def _patch(self, name: str, what: str, body: dict[str, Any]) -> None:
        apps, _core, _net = self._apis()
        await self._call(
            f"{what} deployment {name}",
            apps.patch_namespaced_deployment(
                name,
                self.namespace,
                body,
                _content_type="application/merge-patch+json",
                _request_timeout=TIMEOUT,
            ),
        )

    async def _create(self, what: str, call: Awaitable[Any]) -> bool:
        """Create an object; False when one exists already (409), which is left as it is."""
        api_exception = _client().ApiException
        try:
            await self._call(what, call)
        except AgentRuntimeError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, api_exception) and cause.status == 409):
                raise
            return False
        return True

    async def _ensure_secret(self, spec: InstanceSpec, data: dict[str, str]) -> None:
        """Create the token Secret, or give an existing one a fresh token."""
        _apps, core, _net = self._apis()
        body = self.objects.secret_body(spec, data)
        created = await self._create(
            f"create secret {spec.name}",
            core.create_namespaced_secret(self.namespace, body, _request_timeout=TIMEOUT),
        )
        if not created:
            await self._call(
                f"update secret {spec.name}",
                core.patch_namespaced_secret(
                    spec.name,
                    self.namespace,
                    {"stringData": body["stringData"]},
                    _content_type="application/merge-patch+json",
                    _request_timeout=TIMEOUT,
                ),
            )

    # -- the runtime interface ----------------------------------------------------------------

    async def ensure(self, spec: InstanceSpec) -> InstanceStatus:
        """Create the token secret, deployment, service and ingress, or bring an existing
        deployment to ``spec`` with one replica (and a fresh token)."""
        apps, core, net = self._apis()
        owner = await self.context.owner_env(spec)
        body = self.objects.deployment_body(spec, owner)
        exists = await self._deployment(spec.name) is not None
        if owner:
            await self._ensure_secret(spec, owner)
        if not exists:
            await self._create(
                f"create deployment {spec.name}",
                apps.create_namespaced_deployment(self.namespace, body, _request_timeout=TIMEOUT),
            )
        else:
            await self._patch(spec.name, "update", {"spec": body["spec"]})
        await self._create(
            f"create service {spec.name}",
            core.create_namespaced_service(
                self.namespace, self.objects.service_body(spec), _request_timeout=TIMEOUT
            ),
        )
        if self.options["ingress"]:
            await self._create(
                f"create ingress {spec.name}",
                net.create_namespaced_ingress(
                    self.namespace, self.objects.ingress_body(spec), _request_timeout=TIMEOUT
                ),
            )
        return await self.status(spec.name)

    async def start_instance(self, name: str) -> InstanceStatus:
        """Scale the deployment to one replica."""
        await self._existing(name)
        await self._patch(name, "scale up", {"spec": {"replicas": 1}})
        return await self.status(name)

    async def stop_instance(self, name: str) -> InstanceStatus:
        """Scale the deployment to zero; the objects stay."""
        await self._existing(name)
        await self._patch(name, "scale down", {"spec": {"replicas": 0}})
        return await self.status(name)

    async def restart(self, name: str) -> InstanceStatus:
        """Roll the pods (as ``kubectl rollout restart``), starting a stopped instance."""
        await self._existing(name)
        now = datetime.now(UTC).isoformat()
        template = {"metadata": {"annotations": {RESTARTED_AT: now}}}
        await self._patch(name, "restart", {"spec": {"replicas": 1, "template": template}})
        return await self.status(name)

    async def remove(self, name: str) -> bool:
        """Delete the ingress, the token secret, the service and the deployment with its
        pods."""
        if await self._deployment(name) is None:
            return False
        apps, core, net = self._apis()
        if self.options["ingress"]:
            await self._call(
                f"delete ingress {name}",
                net.delete_namespaced_ingress(name, self.namespace, _request_timeout=TIMEOUT),
                missing_ok=True,
            )
        await self._call(
            f"delete secret {name}",
            core.delete_namespaced_secret(name, self.namespace, _request_timeout=TIMEOUT),
            missing_ok=True,
        )
        await self._call(
            f"delete service {name}",
            core.delete_namespaced_service(name, self.namespace, _request_timeout=TIMEOUT),
            missing_ok=True,
        )
        await self._call(
            f"delete deployment {name}",
            apps.delete_namespaced_deployment(
                name, self.namespace, propagation_policy="Background", _request_timeout=TIMEOUT
            ),
            missing_ok=True,
        )
        return True

    async def status(self, name: str) -> InstanceStatus:
        """The instance's state from its deployment and pods."""
        deployment = await self._deployment(name)
        if deployment is None:
            return absent(name)
        return self.objects.status(name, deployment, await self._pods(name))

    async def wait_ready(self, name: str, within: float = 60.0) -> InstanceStatus:
        """Wait until a pod is ready (its readiness probe answers)."""
        return await poll_until_ready(self, name, within, float(self.options["poll_seconds"]))

    async def logs(self, name: str, lines: int = 50) -> str:
        """The last ``lines`` lines of the newest running pod (empty while there is none)."""
        await self._existing(name)
        pods = [p for p in await self._pods(name) if p.status and p.status.phase == "Running"]
        if not pods:
            return ""
        pod = max(pods, key=lambda p: iso(p.status.start_time))
        _apps, core, _net = self._apis()
        text = await self._call(
            f"read the log of pod {pod.metadata.name}",
            core.read_namespaced_pod_log(
                pod.metadata.name,
                self.namespace,
                container=CONTAINER,
                tail_lines=lines,
                _request_timeout=TIMEOUT,
            ),
        )
        return str(text or "").rstrip("\n")

    async def node_labels(self) -> dict[str, dict[str, str]] | None:
        """The labels of every node of the cluster, by node name."""
        _apps, core, _net = self._apis()
        nodes = await self._call("list nodes", core.list_node(_request_timeout=TIMEOUT))
        return {n.metadata.name: dict(n.metadata.labels or {}) for n in nodes.items or []}

    async def pods(self, name: str) -> list[InstanceStatus]:
        """One status per pod of the instance (empty when it has none or does not exist)."""
        if await self._deployment(name) is None:
            return []
        return [self.objects.pod_status(name, pod) for pod in await self._pods(name)]

    async def delete_pod(self, name: str, pod: str) -> None:
        """Delete one pod of the instance, or all of them when ``pod`` is the instance's name;
        the deployment starts new ones."""
        await self._existing(name)
        _apps, core, _net = self._apis()
        if pod == name:
            await self._call(
                f"delete the pods of {name}",
                core.delete_collection_namespaced_pod(
                    self.namespace,
                    label_selector=f"{INSTANCE_LABEL}={name}",
                    _request_timeout=TIMEOUT,
                ),
            )
            return
        found = await self._call(
            f"read pod {pod}",
            core.read_namespaced_pod(pod, self.namespace, _request_timeout=TIMEOUT),
            missing_ok=True,
        )
        if found is None or (found.metadata.labels or {}).get(INSTANCE_LABEL) != name:
            raise ApiError(f"instance {name!r} has no pod {pod!r}")
        await self._call(
            f"delete pod {pod}",
            core.delete_namespaced_pod(pod, self.namespace, _request_timeout=TIMEOUT),
            missing_ok=True,
        )

    async def list(self) -> list[InstanceStatus]:
        """Every deployment labelled as managed by iapflow (last: ``list`` shadows the builtin in
        the class body)."""
        apps, _core, _net = self._apis()
        found = await self._call(
            "list deployments",
            apps.list_namespaced_deployment(
                self.namespace, label_selector=f"{MANAGED_BY}=iapflow", _request_timeout=TIMEOUT
            ),
        )
        names = [(d.metadata.labels or {}).get(INSTANCE_LABEL) for d in found.items or []]
        return await statuses(self, [name for name in names if name])


def build_kubernetes(options: Mapping[str, Any], context: RuntimeContext) -> KubernetesRuntime:
    """The ``kubernetes`` runtime's factory; checks option names and types, and that
    kubernetes-asyncio is installed."""
    for key, value in options.items():
        if key not in OPTIONS:
            known = ", ".join(sorted(OPTIONS))
            raise ConfigError(f"agents.{key}", f"not an option of the kubernetes runtime ({known})")
        default = OPTIONS[key]
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            continue
        if type(value) is not type(default):
            raise ConfigError(f"agents.{key}", f"must be {type(default).__name__}")
    selector = options.get("node_selector", {})
    if not all(isinstance(v, str) for v in selector.values()):
        raise ConfigError("agents.node_selector", "must map node label names to strings")
    try:
        importlib.import_module("kubernetes_asyncio")
    except ImportError as exc:
        raise ConfigError(
            "agents.runtime",
            "the kubernetes runtime needs kubernetes-asyncio; install it with: "
            "pip install 'iapflow-nodered[kubernetes]'",
        ) from exc
    return KubernetesRuntime(dict(options), context)
