"""The kubernetes runtime against a FAKE Kubernetes API server (FakeKubernetesApi, an aiohttp app
in this file), since there is no cluster here: the contract suite, the exact requests the
runtime sends (deployment with env, resources, probes and node selector; service; ingress;
scaling and restart patches; deletes), pods, node labels, and clear errors (API unreachable,
403, image that cannot be pulled). The fake plays the deployment controller and the kubelet
just enough: it keeps pods in step with each deployment's replicas and template. What a fake
cannot prove (scheduling, probes, RBAC, the ingress controller) needs a real cluster."""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import json
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from iapflow import wellknown
from iapflow.contracts.agents import (
    AgentRuntimeError,
    InstanceNotFound,
    InstanceSpec,
    RuntimeContext,
)
from iapflow.errors import ApiError, ConfigError
from iapflow.testing import JsonClient, ReplyError, make_test_config, running_server
from iapflow.testing.agent_runtime_contract import AgentRuntimeContract
from iapflow_mongo.embedded import free_port
from iapflow_nodered.kubernetes import KubernetesRuntime, build_kubernetes

TOKEN = "fake-cluster-token"
CREATED = "2026-01-02T03:04:05Z"
_counter = itertools.count(1)

COLLECTIONS = {
    "deployments": r"/apis/apps/v1/namespaces/([^/]+)/deployments",
    "services": r"/api/v1/namespaces/([^/]+)/services",
    "ingresses": r"/apis/networking\.k8s\.io/v1/namespaces/([^/]+)/ingresses",
    "pods": r"/api/v1/namespaces/([^/]+)/pods",
    "secrets": r"/api/v1/namespaces/([^/]+)/secrets",
}
KINDS = {
    "deployments": "Deployment",
    "services": "Service",
    "ingresses": "Ingress",
    "pods": "Pod",
    "secrets": "Secret",
}


def store_secret(secret: dict[str, Any]) -> dict[str, Any]:
    """As the API server does: ``stringData`` is written into ``data``, base64-encoded."""
    strings = secret.pop("stringData", None) or {}
    data = secret.setdefault("data", {})
    for key, value in strings.items():
        data[key] = base64.b64encode(value.encode()).decode()
    return secret


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def matches(labels: dict[str, str], selector: str) -> bool:
    """``a=b,c=d`` label selectors, the only kind the runtime sends."""
    wanted = [part.split("=", 1) for part in selector.split(",") if part]
    return all(labels.get(key) == value for key, value in wanted)


@dataclass
class FakeKubernetesApi:
    """A fake of the parts of the Kubernetes API the runtime uses; records every request as
    ``(method, path, query, body, content_type)``."""

    namespace: str = "nodered"
    token: str = TOKEN
    forbidden: bool = False
    unpullable: set[str] = field(default_factory=set)
    nodes: dict[str, dict[str, str]] = field(
        default_factory=lambda: {
            "node-1": {"kubernetes.io/hostname": "node-1", "disktype": "ssd"},
            "node-2": {"kubernetes.io/hostname": "node-2"},
        }
    )
    objects: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {kind: {} for kind in COLLECTIONS}
    )
    requests: list[tuple[str, str, dict[str, str], Any, str]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    def calls(self, method: str, pattern: str) -> list[tuple[dict[str, str], Any, str]]:
        """(query, body, content type) of recorded requests whose path matches ``pattern``."""
        return [
            (q, b, c) for m, p, q, b, c in self.requests if m == method and re.fullmatch(pattern, p)
        ]

    def writes(self) -> list[tuple[str, str]]:
        """(method, path) of every request that changed something, in order."""
        return [(m, p) for m, p, *_ in self.requests if m != "GET"]

    @staticmethod
    def status(code: int, reason: str, message: str) -> web.Response:
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
        return web.json_response(body, status=code)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = None
        if request.can_read_body:
            raw = await request.read()
            body = json.loads(raw) if raw else None
        self.requests.append(
            (request.method, request.path, dict(request.query), body, request.content_type)
        )
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return self.status(401, "Unauthorized", "Unauthorized")
        if self.forbidden:
            return self.status(
                403,
                "Forbidden",
                f'{request.path} is forbidden: User "system:serviceaccount:{self.namespace}:'
                'iapflow" cannot do that',
            )
        if request.path == "/api/v1/nodes":
            items = [
                {"metadata": {"name": n, "labels": labels}} for n, labels in self.nodes.items()
            ]
            return web.json_response({"kind": "NodeList", "apiVersion": "v1", "items": items})
        for kind, prefix in COLLECTIONS.items():
            match = re.fullmatch(prefix + r"(?:/([^/]+)(/log)?)?", request.path)
            if match:
                return self.collection(request, kind, match.group(2), match.group(3), body)
        return self.status(404, "NotFound", f"the fake has no {request.method} {request.path}")

    def collection(
        self, request: web.Request, kind: str, name: str | None, sub: str | None, body: Any
    ) -> web.Response:
        store = self.objects[kind]
        method = request.method
        selector = request.query.get("labelSelector", "")
        if name is None and method == "GET":
            items = [
                o for o in store.values() if matches(o["metadata"].get("labels", {}), selector)
            ]
            return web.json_response({"kind": KINDS[kind] + "List", "items": items, "metadata": {}})
        if name is None and method == "POST":
            name = body["metadata"]["name"]
            if name in store:
                return self.status(409, "AlreadyExists", f'{kind} "{name}" already exists')
            obj = copy.deepcopy(body)
            obj["metadata"].update(uid=f"uid-{next(_counter)}", creationTimestamp=CREATED)
            store[name] = obj
            if kind == "secrets":
                store_secret(obj)
            if kind == "deployments":
                self.reconcile(obj)
            return web.json_response(obj, status=201)
        if name is None and method == "DELETE" and kind == "pods":
            doomed = [n for n, p in store.items() if matches(p["metadata"]["labels"], selector)]
            for pod in doomed:
                self.delete_pod(pod)
            return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Success"})
        obj = store.get(name or "")
        if obj is None:
            return self.status(404, "NotFound", f'{kind} "{name}" not found')
        if sub == "/log":
            tail = int(request.query.get("tailLines", "1000"))
            return web.Response(text="".join(line + "\n" for line in obj["log"][-tail:]))
        if method == "GET":
            return web.json_response({k: v for k, v in obj.items() if k != "log"})
        if method == "PATCH":
            if request.content_type != "application/merge-patch+json":
                return self.status(415, "UnsupportedMediaType", request.content_type)
            store[name or ""] = obj = merge_patch(obj, body)
            if kind == "secrets":
                store_secret(obj)
            if kind == "deployments":
                self.reconcile(obj)
            return web.json_response(obj)
        if method == "DELETE":
            if kind == "pods":
                self.delete_pod(name or "")
            else:
                del store[name or ""]
            if kind == "deployments":
                for pod in [n for n, p in self.objects["pods"].items() if p["owner"] == name]:
                    del self.objects["pods"][pod]
            return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Success"})
        return self.status(405, "MethodNotAllowed", f"{method} {request.path}")

    def delete_pod(self, name: str) -> None:
        pod = self.objects["pods"].pop(name)
        deployment = self.objects["deployments"].get(pod["owner"])
        if deployment is not None:
            self.reconcile(deployment)

    def reconcile(self, deployment: dict[str, Any]) -> None:
        """The deployment controller and kubelet in one: pods of the current template, as many
        as the replicas; a pod whose image is unpullable waits in ErrImagePull."""
        name = deployment["metadata"]["name"]
        template = deployment["spec"]["template"]
        digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        pods = self.objects["pods"]
        for pod_name in [n for n, p in pods.items() if p["owner"] == name]:
            if pods[pod_name]["metadata"]["labels"]["pod-template-hash"] != digest:
                del pods[pod_name]
        mine = [n for n, p in pods.items() if p["owner"] == name]
        wanted = deployment["spec"].get("replicas", 1)
        for extra in mine[wanted:]:
            del pods[extra]
        for _ in range(wanted - len(mine)):
            pod_name = f"{name}-{digest}-{next(_counter):05d}"
            pods[pod_name] = self.pod(name, pod_name, template, digest)
        ready = sum(
            1 for p in pods.values() if p["owner"] == name and p["status"]["phase"] == "Running"
        )
        deployment["status"] = {
            "replicas": min(wanted, len(mine) or wanted),
            "readyReplicas": ready,
        }
        if ready == 0:
            del deployment["status"]["readyReplicas"]

    def pod(self, owner: str, name: str, template: dict[str, Any], digest: str) -> dict[str, Any]:
        container = template["spec"]["containers"][0]
        image = container["image"]
        selector = template["spec"].get("nodeSelector", {})
        node = next(
            (
                n
                for n, labels in self.nodes.items()
                if matches(labels, ",".join(f"{k}={v}" for k, v in selector.items()))
            ),
            None,
        )
        status: dict[str, Any] = {"phase": "Pending", "conditions": []}
        base = {"name": container["name"], "image": image, "imageID": "", "restartCount": 0}
        if node is None:
            status["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/2 nodes are available: 2 node(s) didn't match node selector.",
                }
            ]
        elif image in self.unpullable:
            message = f'failed to pull image "{image}": not found'
            waiting = {"waiting": {"reason": "ErrImagePull", "message": message}}
            status["containerStatuses"] = [{**base, "ready": False, "state": waiting}]
        else:
            status.update(phase="Running", startTime=CREATED)
            running = {"running": {"startedAt": CREATED}}
            status["containerStatuses"] = [
                {**base, "imageID": "sha256:fake", "ready": True, "state": running}
            ]
        return {
            "owner": owner,
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {**template["metadata"]["labels"], "pod-template-hash": digest},
                "creationTimestamp": CREATED,
            },
            "spec": {**template["spec"], "nodeName": node or ""},
            "status": status,
            "log": ["Welcome to Node-RED", "Starting flows", "Started flows"],
        }


@pytest.fixture
async def fake_api() -> AsyncIterator[tuple[FakeKubernetesApi, str]]:
    api = FakeKubernetesApi()
    runner = web.AppRunner(api.app())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield api, f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def jwt_of(user_id: str) -> str:
    """The owner's token as the platform hands it (async: the platform reads the owner)."""
    return f"jwt-of-{user_id}"


async def issue_token(user_id: str) -> str:
    """The server's token issuer, as the platform hands it to runtimes."""
    return f"token-for-{user_id}-{next(_counter)}"


def write_kubeconfig(folder: Path, url: str) -> Path:
    """A kubeconfig pointing at ``url`` with the fake's bearer token."""
    path = folder / "kubeconfig"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "iapflow", "user": {"token": TOKEN}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "iapflow"}}],
        "current-context": "fake",
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def options(url: str, folder: Path, **extra: Any) -> dict[str, Any]:
    return {
        "kubeconfig": str(write_kubeconfig(folder, url)),
        "namespace": "nodered",
        "poll_seconds": 0.02,
        **extra,
    }


@pytest.fixture
async def kube(
    fake_api: tuple[FakeKubernetesApi, str], tmp_path: Path
) -> AsyncIterator[KubernetesRuntime]:
    runtime = build_kubernetes(
        options(fake_api[1], tmp_path, domain="nr.example.com"),
        RuntimeContext(tmp_path, "ws://iapflow.iapflow:3000/ws", issue_token),
    )
    await runtime.start()
    yield runtime
    await runtime.stop()


class TestKubernetesRuntimeOnAFakeApiServer(AgentRuntimeContract):
    ready_within = 5.0

    @pytest.fixture
    async def runtime(self, kube: KubernetesRuntime) -> KubernetesRuntime:
        return kube


DEPLOYMENTS = "/apis/apps/v1/namespaces/nodered/deployments"
SERVICES = "/api/v1/namespaces/nodered/services"
INGRESSES = "/apis/networking.k8s.io/v1/namespaces/nodered/ingresses"
PODS = "/api/v1/namespaces/nodered/pods"
SECRETS = "/api/v1/namespaces/nodered/secrets"


async def test_fake_api_gets_the_exact_deployment_service_and_ingress(
    fake_api: tuple[FakeKubernetesApi, str], tmp_path: Path
) -> None:
    api, url = fake_api
    runtime = build_kubernetes(
        options(
            url,
            tmp_path,
            domain="nr.example.com",
            ingress_class="traefik",
            tls_secret="nr-tls",
            node_selector={"pool": "nodered"},
            cpu_limit="500m",
            liveness_initial_delay_seconds=30,
        ),
        RuntimeContext(
            tmp_path,
            "ws://iapflow.iapflow:3000/ws",
            jwt_of,
            lambda name: f"key-of-{name}",
        ),
    )
    api.nodes["node-1"]["pool"] = "nodered"
    await runtime.start()
    try:
        spec = InstanceSpec(
            name="alice",
            owner_id="u1",
            # api_ws_url and jwt here cannot replace the runtime's (see the exact body below)
            env={
                "TZ": "Europe/Copenhagen",
                "nodered_sa": "alice",
                "api_ws_url": "ws://evil.example:1/ws",
                "jwt": "stolen",
            },
            memory_mb=300,
            labels={"userid": "u1"},
            node_selector={"disktype": "ssd"},
        )
        status = await runtime.ensure(spec)
    finally:
        await runtime.stop()
    assert status.state == "running"
    assert status.url == "https://alice.nr.example.com/"
    assert status.owner_id == "u1"
    labels = {
        "app": "alice",
        "openiap.io/instance": "alice",
        "openiap.io/managed-by": "iapflow",
        "userid": "u1",
    }
    probe = {"httpGet": {"path": "/auth/login", "port": 1880}}
    [(_, deployment, content_type)] = api.calls("POST", DEPLOYMENTS)
    assert content_type == "application/json"
    assert deployment == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "alice", "namespace": "nodered", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"openiap.io/instance": "alice"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "nodered",
                            "image": "nodered/node-red:4.1",
                            "imagePullPolicy": "IfNotPresent",
                            "ports": [{"name": "web", "containerPort": 1880}],
                            "env": [
                                {"name": "TZ", "value": "Europe/Copenhagen"},
                                {"name": "api_ws_url", "value": "ws://iapflow.iapflow:3000/ws"},
                                {
                                    "name": "jwt",
                                    "valueFrom": {"secretKeyRef": {"name": "alice", "key": "jwt"}},
                                },
                                {
                                    "name": "nodered_credential_secret",
                                    "valueFrom": {
                                        "secretKeyRef": {
                                            "name": "alice",
                                            "key": "nodered_credential_secret",
                                        }
                                    },
                                },
                                {"name": "nodered_id", "value": "alice"},
                                {"name": "nodered_sa", "value": "alice"},
                            ],
                            "resources": {
                                "requests": {"memory": "300Mi", "cpu": "100m"},
                                "limits": {"memory": "428Mi", "cpu": "500m"},
                            },
                            "readinessProbe": {**probe, "periodSeconds": 2},
                            "livenessProbe": {
                                **probe,
                                "initialDelaySeconds": 30,
                                "periodSeconds": 5,
                                "failureThreshold": 5,
                            },
                        }
                    ],
                    "enableServiceLinks": False,
                    "nodeSelector": {"pool": "nodered", "disktype": "ssd"},
                },
            },
        },
    }
    [(_, service, _)] = api.calls("POST", SERVICES)
    assert service == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "alice", "namespace": "nodered", "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": {"openiap.io/instance": "alice"},
            "ports": [{"name": "web", "port": 1880, "targetPort": 1880}],
            "sessionAffinity": "ClientIP",
        },
    }
    [(_, ingress, _)] = api.calls("POST", INGRESSES)
    assert ingress == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "alice", "namespace": "nodered", "labels": labels},
        "spec": {
            "rules": [
                {
                    "host": "alice.nr.example.com",
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "alice", "port": {"number": 1880}}},
                            }
                        ]
                    },
                }
            ],
            "ingressClassName": "traefik",
            "tls": [{"hosts": ["alice.nr.example.com"], "secretName": "nr-tls"}],
        },
    }
    [(_, secret, _)] = api.calls("POST", SECRETS)
    assert secret == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "alice", "namespace": "nodered", "labels": labels},
        "type": "Opaque",
        "stringData": {"jwt": "jwt-of-u1", "nodered_credential_secret": "key-of-alice"},
    }
    assert api.writes() == [
        ("POST", SECRETS),
        ("POST", DEPLOYMENTS),
        ("POST", SERVICES),
        ("POST", INGRESSES),
    ]
    [(query, _, _)] = api.calls("GET", PODS)[-1:]
    assert query["labelSelector"] == "openiap.io/instance=alice"


async def test_fake_api_gets_scale_restart_patches_and_deletes(
    kube: KubernetesRuntime, fake_api: tuple[FakeKubernetesApi, str]
) -> None:
    api = fake_api[0]
    await kube.ensure(InstanceSpec(name="bob", owner_id="u2"))
    first_pod = (await kube.pods("bob"))[0].name
    assert (await kube.stop_instance("bob")).state == "stopped"
    assert (await kube.start_instance("bob")).state == "running"
    await kube.restart("bob")
    assert (await kube.pods("bob"))[0].name != first_pod
    patches = api.calls("PATCH", DEPLOYMENTS + "/bob")
    assert [content for _, _, content in patches] == ["application/merge-patch+json"] * 3
    assert patches[0][1] == {"spec": {"replicas": 0}}
    assert patches[1][1] == {"spec": {"replicas": 1}}
    restarted = patches[2][1]
    assert restarted["spec"]["replicas"] == 1
    assert list(restarted["spec"]["template"]["metadata"]["annotations"]) == [
        "iapflow.io/restartedAt"
    ]
    # ensure on an existing deployment brings it to the spec: one merge patch, no create
    await kube.stop_instance("bob")
    again = await kube.ensure(InstanceSpec(name="bob", owner_id="u2", memory_mb=512))
    assert again.state == "running"
    assert len(api.calls("POST", DEPLOYMENTS)) == 1
    [(_, refreshed, content)] = api.calls("PATCH", SECRETS + "/bob")
    assert content == "application/merge-patch+json"
    assert list(refreshed) == ["stringData"]
    assert refreshed["stringData"]["jwt"].startswith("token-for-u2-")
    stored = base64.b64decode(api.objects["secrets"]["bob"]["data"]["jwt"]).decode()
    assert stored == refreshed["stringData"]["jwt"]
    update = api.calls("PATCH", DEPLOYMENTS + "/bob")[-1][1]
    assert update["spec"]["replicas"] == 1
    container = update["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"]["memory"] == "512Mi"
    assert await kube.remove("bob") is True
    deletes = [(m, p) for m, p in api.writes() if m == "DELETE"]
    assert deletes == [
        ("DELETE", INGRESSES + "/bob"),
        ("DELETE", SECRETS + "/bob"),
        ("DELETE", SERVICES + "/bob"),
        ("DELETE", DEPLOYMENTS + "/bob"),
    ]
    [(query, _, _)] = api.calls("DELETE", DEPLOYMENTS + "/bob")
    assert query["propagationPolicy"] == "Background"
    assert api.objects["pods"] == {} and api.objects["services"] == {}
    assert api.objects["secrets"] == {}


async def test_fake_api_pods_delete_pod_and_node_labels(
    kube: KubernetesRuntime, fake_api: tuple[FakeKubernetesApi, str]
) -> None:
    api = fake_api[0]
    await kube.ensure(InstanceSpec(name="carol", owner_id="u3"))
    await kube.ensure(InstanceSpec(name="dave", owner_id="u4"))
    [pod] = await kube.pods("carol")
    assert pod.name.startswith("carol-")
    assert pod.state == "running"
    assert pod.as_dict()["metadata"]["name"] == pod.name
    assert pod.extra["nodename"] == "node-1"
    await kube.delete_pod("carol", pod.name)
    assert api.calls("DELETE", f"{PODS}/{pod.name}")
    [new_pod] = await kube.pods("carol")
    assert new_pod.name != pod.name
    [dave_pod] = await kube.pods("dave")
    with pytest.raises(ApiError, match="has no pod"):
        await kube.delete_pod("carol", dave_pod.name)
    assert dave_pod.name in api.objects["pods"]
    await kube.delete_pod("carol", "carol")
    [(query, _, _)] = api.calls("DELETE", PODS)
    assert query["labelSelector"] == "openiap.io/instance=carol"
    assert (await kube.pods("carol"))[0].name != new_pod.name
    assert await kube.pods("nobody") == []
    assert await kube.node_labels() == api.nodes
    for name in ("carol", "dave"):
        await kube.remove(name)


async def test_fake_api_image_pull_failure_is_reported_in_status(
    kube: KubernetesRuntime, fake_api: tuple[FakeKubernetesApi, str]
) -> None:
    fake_api[0].unpullable.add("no/such:1")
    status = await kube.ensure(InstanceSpec(name="erin", image="no/such:1"))
    assert status.state == "crashed"
    assert "image 'no/such:1' cannot be pulled (ErrImagePull)" in status.reason
    with pytest.raises(AgentRuntimeError, match="cannot be pulled"):
        await kube.wait_ready("erin", 2.0)
    [pod] = await kube.pods("erin")
    assert pod.state == "crashed"
    assert await kube.logs("erin") == ""
    await kube.remove("erin")


async def test_fake_api_unschedulable_pod_says_why(
    kube: KubernetesRuntime, fake_api: tuple[FakeKubernetesApi, str]
) -> None:
    status = await kube.ensure(InstanceSpec(name="fred", node_selector={"gpu": "yes"}))
    assert status.state == "starting"
    assert "not scheduled (Unschedulable)" in status.reason
    with pytest.raises(AgentRuntimeError, match="not ready within"):
        await kube.wait_ready("fred", 0.2)
    await kube.remove("fred")


async def test_fake_api_forbidden_is_a_clear_error(
    kube: KubernetesRuntime, fake_api: tuple[FakeKubernetesApi, str]
) -> None:
    fake_api[0].forbidden = True
    with pytest.raises(
        AgentRuntimeError, match=r"refused to read deployment gina \(403 Forbidden\)"
    ):
        await kube.ensure(InstanceSpec(name="gina"))
    with pytest.raises(AgentRuntimeError, match=r"needs rights on deployments.*'nodered'"):
        await kube.status("gina")
    with pytest.raises(AgentRuntimeError, match="list on nodes"):
        await kube.node_labels()


async def test_fake_api_wrong_credentials_are_a_clear_error(
    fake_api: tuple[FakeKubernetesApi, str], tmp_path: Path
) -> None:
    fake_api[0].token = "another-token"
    runtime = build_kubernetes(options(fake_api[1], tmp_path), RuntimeContext(tmp_path))
    await runtime.start()
    try:
        with pytest.raises(AgentRuntimeError, match=r"did not accept iapflow's credentials"):
            await runtime.status("hank")
    finally:
        await runtime.stop()


async def test_api_unreachable_is_a_clear_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    runtime = build_kubernetes(options(url, tmp_path), RuntimeContext(tmp_path))
    await runtime.start()  # the server still starts
    try:
        with pytest.raises(AgentRuntimeError, match=f"cannot reach the Kubernetes API at {url}"):
            await runtime.ensure(InstanceSpec(name="ivan"))
    finally:
        await runtime.stop()


async def test_fake_api_foreign_deployment_is_not_touched(
    kube: KubernetesRuntime, fake_api: tuple[FakeKubernetesApi, str]
) -> None:
    api = fake_api[0]
    api.objects["deployments"]["judy"] = {
        "metadata": {"name": "judy", "labels": {"app": "judy"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "judy"}},
            "template": {"metadata": {"labels": {"app": "judy"}}, "spec": {"containers": []}},
        },
    }
    with pytest.raises(AgentRuntimeError, match="iapflow did not create it"):
        await kube.remove("judy")
    with pytest.raises(AgentRuntimeError, match="iapflow did not create it"):
        await kube.ensure(InstanceSpec(name="judy"))
    assert "judy" in api.objects["deployments"]
    assert api.writes() == []
    with pytest.raises(InstanceNotFound):
        await kube.delete_pod("nobody", "nobody-x")


async def test_url_option_talks_to_the_api_without_a_kubeconfig(
    fake_api: tuple[FakeKubernetesApi, str], tmp_path: Path
) -> None:
    # as behind `kubectl proxy`: no credentials of iapflow's own, so the fake wants none
    fake_api[0].token = ""
    runtime = build_kubernetes(
        {"url": fake_api[1], "namespace": "nodered", "ingress": False}, RuntimeContext(tmp_path)
    )
    await runtime.start()
    try:
        assert (await runtime.status("kate")).state == "absent"
    finally:
        await runtime.stop()
    assert fake_api[0].calls("GET", DEPLOYMENTS + "/kate")


def test_bad_options_name_their_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"agents\.memory_mb"):
        build_kubernetes({"memory_mb": "1G"}, RuntimeContext(tmp_path))
    with pytest.raises(ConfigError, match=r"agents\.namespac.*not an option"):
        build_kubernetes({"namespac": "x"}, RuntimeContext(tmp_path))
    with pytest.raises(ConfigError, match=r"agents\.node_selector"):
        build_kubernetes({"node_selector": {"pool": 1}}, RuntimeContext(tmp_path))


async def test_missing_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    runtime = build_kubernetes(
        {"kubeconfig": str(tmp_path / "nope.yaml")}, RuntimeContext(tmp_path)
    )
    with pytest.raises(ConfigError, match=r"agents\.kubeconfig.*cannot load Kubernetes"):
        await runtime.start()


async def test_in_cluster_credentials_outside_a_pod_are_a_clear_error(tmp_path: Path) -> None:
    runtime = build_kubernetes({"kubeconfig": "in-cluster"}, RuntimeContext(tmp_path))
    with pytest.raises(ConfigError, match=r"agents\.kubeconfig.*in-cluster"):
        await runtime.start()


# -- the commands on the kubernetes runtime, through the JSON websocket API ------------------


async def test_commands_list_and_delete_pods_on_the_fake_api(
    fake_api: tuple[FakeKubernetesApi, str], tmp_path: Path, mongo_storage: dict[str, Any]
) -> None:
    api, url = fake_api
    agents = {"runtime": "kubernetes", **options(url, tmp_path, domain="nr.example.com")}
    async with AsyncExitStack() as stack:
        config = make_test_config(tmp_path, mongo_storage, agents=agents)
        base = await stack.enter_async_context(running_server(config))
        admin = await stack.enter_async_context(JsonClient(base + "/ws"))
        await admin.signin("admin", "admin")
        reply = await admin.call(
            "insertone",
            collectionname="users",
            item={
                "_type": "user",
                "username": "kubeuser",
                "name": "kubeuser",
                "newpassword": "pw",
                "nodered": {"nodeselector": {"disktype": "ssd"}},
            },
        )
        user_id = reply["result"]["_id"]
        await admin.call(
            "updateone",
            collectionname="users",
            query={"_id": wellknown.PERSONAL_NODERED_USERS},
            item={"$push": {"members": {"_id": user_id, "name": "kubeuser"}}},
        )
        user = await stack.enter_async_context(JsonClient(base + "/ws"))
        await user.signin("kubeuser", "pw")
        started = await user.call("ensurenoderedinstance")
        assert started["result"]["url"] == "http://kubeuser.nr.example.com/"
        [(_, body, _)] = api.calls("POST", DEPLOYMENTS)
        assert body["spec"]["template"]["spec"]["nodeSelector"] == {"disktype": "ssd"}
        # the instance's jwt (from its Secret) signs in as its owner
        token = base64.b64decode(api.objects["secrets"]["kubeuser"]["data"]["jwt"]).decode()
        as_instance = await stack.enter_async_context(JsonClient(base + "/ws"))
        assert (await as_instance.signin(jwt=token))["user"]["_id"] == user_id
        assert body["metadata"]["labels"]["userid"] == user_id
        got = await user.call("getnoderedinstance")
        [pod] = got["results"]
        assert pod["metadata"]["name"].startswith("kubeuser-")
        assert pod["status"]["phase"] == "running"
        await user.call("deletenoderedpod", instancename=pod["metadata"]["name"])
        assert api.calls("DELETE", f"{PODS}/{pod['metadata']['name']}")
        with pytest.raises(ReplyError, match="has no pod"):
            await user.call("deletenoderedpod", instancename="someone-else-pod")
        labels = (await user.call("getkubenodelabels"))["result"]
        assert labels["node-1"]["disktype"] == "ssd"
        assert "Started flows" in (await user.call("getnoderedinstancelog"))["result"]
        assert (await user.call("deletenoderedinstance"))["result"] is True
        assert api.objects["deployments"] == {}

        # an agent (1.5) with its image and node selector: its pods by name
        agent = await user.call(
            "insertone",
            collectionname="agents",
            item={
                "_type": "agent",
                "slug": "kubeagent",
                "image": "openiap/nodeagent:edge",
                "nodeselector": {"disktype": "ssd"},
                "environment": {"packageid": "p1"},
            },
        )
        agentid = agent["result"]["_id"]
        started = await user.call("startagent", agentid=agentid)
        assert started["result"]["state"] == "running"
        body = api.calls("POST", DEPLOYMENTS)[-1][1]
        container = body["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == "openiap/nodeagent:edge"
        assert {"name": "packageid", "value": "p1"} in container["env"]
        assert body["metadata"]["labels"]["agentid"] == agentid
        [pod] = (await user.call("getagentpods", agentid=agentid))["results"]
        assert pod["metadata"]["name"].startswith("kubeagent-")
        await user.call("deleteagentpod", agentid=agentid, podname=pod["metadata"]["name"])
        [new_pod] = (await user.call("getagentpods", agentid=agentid))["results"]
        assert new_pod["metadata"]["name"] != pod["metadata"]["name"]
        await user.call("deleteagent", agentid=agentid)
        assert api.objects["deployments"] == {} and api.objects["secrets"] == {}
