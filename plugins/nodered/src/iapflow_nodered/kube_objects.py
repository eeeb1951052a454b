"""What the kubernetes runtime asks the cluster for, for one instance: the Deployment (its
container, resources, probes and environment), the Secret with the owner's token, the Service
and the Ingress, and the labels that tie them together."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from iapflow.contracts.agents import InstanceSpec, InstanceStatus, RuntimeContext, mapped

MANAGED_BY = "openiap.io/managed-by"
INSTANCE_LABEL = "openiap.io/instance"
CONTAINER = "nodered"
NODE_RED_PORT = 1880

# Pod phases as instance states; a waiting container refines them (see _problem).
_PHASES = {
    "Pending": "starting",
    "Running": "running",
    "Succeeded": "stopped",
    "Failed": "crashed",
}
_PULL_FAILURES = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
_CRASHES = {
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}


class KubeObjects:
    """The objects of each instance, from the runtime's ``[agents]`` options."""

    def __init__(self, options: dict[str, Any], context: RuntimeContext) -> None:
        self.options = options
        self.context = context
        self.namespace = str(options["namespace"])

    def labels(self, spec: InstanceSpec) -> dict[str, str]:
        """The labels of the instance's objects and pods."""
        return {
            "app": spec.name,
            INSTANCE_LABEL: spec.name,
            MANAGED_BY: "iapflow",
            "userid": spec.owner_id,
            **spec.labels,
        }

    def metadata(self, spec: InstanceSpec) -> dict[str, Any]:
        """The name, namespace and labels of each of the instance's objects."""
        return {"name": spec.name, "namespace": self.namespace, "labels": self.labels(spec)}

    def host(self, name: str) -> str:
        """The host name the Ingress routes to the instance."""
        return f"{name}.{self.options['domain']}"

    def deployment_body(
        self, spec: InstanceSpec, from_secret: Iterable[str] = ()
    ) -> dict[str, Any]:
        """The Deployment for ``spec``, as sent on create (and as a merge patch on ensure);
        the variables named in ``from_secret`` come from the instance's Secret."""
        name = spec.name
        labels = self.labels(spec)
        api_ws_url = str(self.options["api_ws_url"]) or self.context.api_ws_url
        # The runtime's own variables win over the spec's: an agent's environment (which any
        # user with update right on it may edit) must not point its owner's token elsewhere.
        values = {**spec.env, "nodered_id": name, "api_ws_url": api_ws_url}
        from_secret = list(from_secret)
        env: list[dict[str, Any]] = [
            {"name": key, "value": value} for key, value in values.items() if key not in from_secret
        ]
        for key in from_secret:
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": name, "key": key}}})
        memory = spec.memory_mb or int(self.options["memory_mb"])
        limits = {"memory": f"{memory + int(self.options['memory_headroom_mb'])}Mi"}
        if self.options["cpu_limit"]:
            limits["cpu"] = str(self.options["cpu_limit"])
        probe = {"httpGet": {"path": str(self.options["probe_path"]), "port": NODE_RED_PORT}}
        container = {
            "name": CONTAINER,
            "image": spec.image or str(self.options["image"]),
            "imagePullPolicy": str(self.options["image_pull_policy"]),
            "ports": [{"name": "web", "containerPort": NODE_RED_PORT}],
            "env": sorted(env, key=lambda entry: str(entry["name"])),
            "resources": {
                "requests": {"memory": f"{memory}Mi", "cpu": str(self.options["cpu_request"])},
                "limits": limits,
            },
            "readinessProbe": {**probe, "periodSeconds": 2},
            "livenessProbe": {
                **probe,
                "initialDelaySeconds": int(self.options["liveness_initial_delay_seconds"]),
                "periodSeconds": 5,
                "failureThreshold": 5,
            },
        }
        pod_spec: dict[str, Any] = {"containers": [container], "enableServiceLinks": False}
        node_selector = {**self.options["node_selector"], **spec.node_selector}
        if node_selector:
            pod_spec["nodeSelector"] = node_selector
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": self.metadata(spec),
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {INSTANCE_LABEL: name}},
                "template": {"metadata": {"labels": labels}, "spec": pod_spec},
            },
        }

    def secret_body(self, spec: InstanceSpec, data: dict[str, str]) -> dict[str, Any]:
        """The Secret holding ``data`` (the owner's token and the credential key, see
        ``RuntimeContext.owner_env``), each key an environment variable of the container: a
        Secret rather than plain env, so reading the Deployment does not reveal them."""
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": self.metadata(spec),
            "type": "Opaque",
            "stringData": data,
        }

    def service_body(self, spec: InstanceSpec) -> dict[str, Any]:
        """The Service in front of the instance's pods."""
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": spec.name,
                "namespace": self.namespace,
                "labels": self.labels(spec),
            },
            "spec": {
                "type": str(self.options["service_type"]),
                "selector": {INSTANCE_LABEL: spec.name},
                "ports": [{"name": "web", "port": NODE_RED_PORT, "targetPort": NODE_RED_PORT}],
                "sessionAffinity": "ClientIP",
            },
        }

    def ingress_body(self, spec: InstanceSpec) -> dict[str, Any]:
        """The Ingress routing ``<name>.<domain>`` to the Service."""
        host = self.host(spec.name)
        backend = {"service": {"name": spec.name, "port": {"number": NODE_RED_PORT}}}
        ingress_spec: dict[str, Any] = {
            "rules": [
                {
                    "host": host,
                    "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]},
                }
            ]
        }
        if self.options["ingress_class"]:
            ingress_spec["ingressClassName"] = str(self.options["ingress_class"])
        if self.options["tls_secret"]:
            ingress_spec["tls"] = [{"hosts": [host], "secretName": str(self.options["tls_secret"])}]
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {
                "name": spec.name,
                "namespace": self.namespace,
                "labels": self.labels(spec),
            },
            "spec": ingress_spec,
        }

    # -- what they say --------------------------------------------------------------------------

    @staticmethod
    def problem(pod: Any) -> tuple[str, str]:
        """``(state, reason)`` when a pod's container cannot run (image pull, crash loop), or
        ``("", reason)`` for a pod that waits to be scheduled; ``("", "")`` otherwise."""
        status = pod.status
        for container in (status.container_statuses or []) if status else []:
            waiting = container.state.waiting if container.state else None
            if waiting is None or not waiting.reason:
                continue
            message = waiting.message or waiting.reason
            if waiting.reason in _PULL_FAILURES:
                image = container.image or "?"
                return "crashed", f"image {image!r} cannot be pulled ({waiting.reason}): {message}"
            if waiting.reason in _CRASHES:
                return "crashed", f"{waiting.reason}: {message}"
        for condition in (status.conditions or []) if status else []:
            if condition.type == "PodScheduled" and condition.status == "False":
                return "", f"not scheduled ({condition.reason}): {condition.message}"
        return "", ""

    @staticmethod
    def restarts(pod: Any) -> int:
        containers = (pod.status.container_statuses or []) if pod.status else []
        return sum(int(c.restart_count or 0) for c in containers)

    def pod_status(self, name: str, pod: Any) -> InstanceStatus:
        phase = str(pod.status.phase or "") if pod.status else ""
        problem, reason = self.problem(pod)
        labels = pod.metadata.labels or {}
        status = mapped(
            pod.metadata.name,
            phase,
            _PHASES,
            owner_id=labels.get("userid", ""),
            restarts=self.restarts(pod),
            reason=reason,
            started=iso(pod.status.start_time if pod.status else None),
            extra={"instance": name, "nodename": (pod.spec.node_name or "") if pod.spec else ""},
        )
        ready = all(c.ready for c in (pod.status.container_statuses or [])) if pod.status else False
        if problem:
            status.state = problem
        elif status.state == "running" and not ready:
            status.state = "starting"
        if pod.metadata.deletion_timestamp is not None:
            status.state = "stopping"
        return status

    def status(self, name: str, deployment: Any, pods: list[Any]) -> InstanceStatus:
        labels = deployment.metadata.labels or {}
        wanted = deployment.spec.replicas if deployment.spec.replicas is not None else 1
        ready = int(deployment.status.ready_replicas or 0) if deployment.status else 0
        problems = [self.problem(pod) for pod in pods]
        crash = next((p for p in problems if p[0] == "crashed"), None)
        reason = crash[1] if crash else next((p[1] for p in problems if p[1]), "")
        if wanted == 0:
            state = "stopping" if pods else "stopped"
        elif ready > 0:
            state = "running"
        elif crash is not None:
            state = "crashed"
        else:
            state = "starting"
        return InstanceStatus(
            name=name,
            state=state,
            owner_id=labels.get("userid", ""),
            url=self.url(name),
            restarts=sum(self.restarts(pod) for pod in pods),
            reason=reason,
            started=iso(deployment.metadata.creation_timestamp),
            extra={
                "namespace": self.namespace,
                "service_url": f"http://{name}.{self.namespace}:{NODE_RED_PORT}/",
                "pods": [pod.metadata.name for pod in pods],
            },
        )

    def url(self, name: str) -> str:
        scheme = "https" if self.options["tls_secret"] else "http"
        if self.options["ingress"]:
            return f"{scheme}://{self.host(name)}/"
        return f"http://{name}.{self.namespace}:{NODE_RED_PORT}/"


def iso(value: Any) -> str:
    """A Kubernetes timestamp as ISO-8601 text (empty for none)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
