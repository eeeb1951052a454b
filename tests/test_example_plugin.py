"""The example third-party plugin (tests/plugins/hello, installed as ``iapflow-hello``) works
through the hooks alone: its command on the JSON protocol, on ``/ws/v2`` and on gRPC with its
own protobuf messages, its ``[hello]`` section (validated, with a "did you mean"), its UI page
served and listed, its listing by distribution and version. Its page in Chromium is in
tests/ui/test_ui_example_plugin.py."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest

from iapflow.builtin.proto import openiap_pb2 as pb
from iapflow.builtin.proto.config import GrpcConfig
from iapflow.errors import ConfigError
from iapflow.platform import Platform
from iapflow.plugins import Plugins
from iapflow.testing import JsonClient, ReplyError, make_test_config, serving
from iapflow.testing.grpc_client import GrpcClient
from iapflow.testing.proto_client import ProtoError, ProtoWs
from iapflow_hello.hello_pb2 import HelloRequest, HelloResponse


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def hello_server(tmp_path: Path, mongo_storage: dict[str, Any]) -> AsyncIterator[Any]:
    config = make_test_config(
        tmp_path, mongo_storage, hello={"greeting": "Good day"}, grpc={"port": _free_port()}
    )
    async with serving(config) as (base, platform):
        yield base, platform


async def test_the_installed_plugin_is_listed_with_its_distribution(hello_server: Any) -> None:
    base, _platform = hello_server
    async with httpx.AsyncClient() as http:
        listed = (await http.get(base.replace("ws://", "http://") + "/-/plugins")).json()
    [hello] = [p for p in listed if p["name"] == "hello"]
    assert hello["dist"] == "iapflow-hello"
    assert hello["version"] == metadata.version("iapflow-hello") == "0.3.0"
    assert not hello["builtin"]
    assert {"register_commands", "register_config", "register_ui"} <= set(hello["hooks"])


async def test_hello_on_the_json_protocol_uses_the_config_section(hello_server: Any) -> None:
    base, platform = hello_server
    async with JsonClient(base + "/ws") as client:
        await client.signin("admin", "admin")
        reply = await client.call("hello", name="json")
        assert (reply["result"], reply["count"]) == ("Good day, json!", 1)
        with pytest.raises(ReplyError, match="at most 40 characters"):
            await client.call("hello", name="n" * 41)
    [stored] = await platform.storage.find("greetings", {})
    assert stored["name"] == "json" and stored["_createdby"] == "admin"  # the data layer wrote it


async def test_hello_on_proto_websocket_and_grpc_with_its_own_messages(
    hello_server: Any,
) -> None:
    base, platform = hello_server
    async with ProtoWs(base + "/ws/v2") as ws:
        with pytest.raises(ProtoError, match="Not signed in"):
            await ws.call("hello", HelloRequest(name="anonymous"), HelloResponse)
        await ws.signin()
        reply = await ws.call("hello", HelloRequest(name="proto"), HelloResponse)
        assert (reply.result, reply.count) == ("Good day, proto!", 1)
        with pytest.raises(ProtoError, match=r"not a valid iapflow_hello\.HelloRequest"):
            await ws.call("hello", pb.Stream(data=b"\xff" * 8), HelloResponse)
    port = platform.config.section(GrpcConfig).port
    async with GrpcClient(f"127.0.0.1:{port}") as grpc:
        await grpc.signin("admin", "admin")
        reply = await grpc.call("hello", name="grpc")
        assert (reply["result"], reply["count"]) == ("Good day, grpc!", 2)


async def test_the_page_module_is_served_and_imported(hello_server: Any) -> None:
    base, _platform = hello_server
    http = base.replace("ws://", "http://")
    async with httpx.AsyncClient() as client:
        index = await client.get(http + "/ui/pages/index.js")
        page = await client.get(http + "/ui/pages/hello/hello.js")
        source = await client.get(http + "/ui/pages/hello/../../../plugin.py")
    assert 'import "./hello/hello.js";' in index.text
    assert index.headers["content-type"].startswith("text/javascript")
    assert page.status_code == 200 and 'id: "hello"' in page.text
    assert "script-src" in page.headers["content-security-policy"]
    assert source.status_code == 404


def test_its_config_section_is_validated_with_a_suggestion(
    tmp_path: Path, mongo_storage: dict[str, Any]
) -> None:
    config = make_test_config(tmp_path, mongo_storage, hello={"greting": "Hi"})
    with pytest.raises(ConfigError) as error:
        Platform(config)
    assert error.value.key == "hello.greting"
    assert "did you mean 'greeting'?" in error.value.reason
    config = make_test_config(tmp_path, mongo_storage, hello={"max_name_length": 0})
    with pytest.raises(ConfigError, match=r"hello\.max_name_length"):
        Platform(config)


def test_without_the_plugin_its_section_is_unknown(
    tmp_path: Path, mongo_storage: dict[str, Any]
) -> None:
    config = make_test_config(tmp_path, mongo_storage, hello={"greeting": "Hi"})
    with pytest.raises(ConfigError, match="unknown section"):
        Platform(config, Plugins(blocked=["hello"]))


def test_registering_the_installed_plugin_again_in_a_test_is_harmless() -> None:
    import iapflow_hello.plugin

    plugins = Plugins()
    plugins.register(iapflow_hello.plugin, name="hello")
    assert plugins.commands().plugin_of("hello") == "hello"
