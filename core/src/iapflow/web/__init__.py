"""The web interface's shell: static assets (this folder) served under ``/ui``, and the pages
plugins register with ``register_ui`` under ``/ui/pages/<name>/``.

The pages are plain ES modules that talk to the server only through the JSON websocket
protocol and the HTTP file routes, with the signed-in user's token, like any other client.
``/ui/pages/index.js`` imports every registered page module; the shell imports it once signed
in. docs/web-ui.md describes the pages and how to add one.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

ASSETS = Path(__file__).parent

# Only the UI's own files may run or style it: scripts and styles come from /ui/ only, not
# from anywhere else on the origin (/download serves users' uploads there).
CSP = (
    "default-src 'self'; script-src {ui}; style-src {ui}; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    "content-security-policy": CSP.format(ui="'none'"),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


def headers_for(scope: Scope) -> dict[str, str]:
    """The security headers of one answer: the CSP names this host's ``/ui/`` (a host-source
    with a path, which CSP matches by path; ``'self'`` would allow the whole origin)."""
    host = ""
    for key, value in scope.get("headers", []):
        if key == b"host":
            host = value.decode("latin-1")
            break
    ui = f"{host}/ui/" if _HOST.match(host) else "'none'"
    return {**HEADERS, "content-security-policy": CSP.format(ui=ui)}


# This folder is also a Python package: serve the assets only, never the Python files.
SERVED_SUFFIXES = (".html", ".css", ".js", ".png", ".svg", ".ico", "/")


class UiFiles(StaticFiles):
    """``StaticFiles`` for the UI assets, with the security headers on every answer."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        security = headers_for(scope)
        if scope["type"] == "http" and not scope["path"].endswith(SERVED_SUFFIXES):
            response = Response("Not Found", status_code=404, headers=security)
            await response(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend((k.encode(), v.encode()) for k, v in security.items())
                message = {**message, "headers": headers}
            await send(message)

        try:
            await super().__call__(scope, receive, send_with_headers)
        except HTTPException as exc:  # 404, 405: answered here, so with the headers too
            headers = {**security, **(exc.headers or {})}
            await Response(exc.detail, status_code=exc.status_code, headers=headers)(
                scope, receive, send
            )

    def lookup_path(self, path: str) -> tuple[str, os.stat_result | None]:
        # The request path is normalised before the lookup ("__init__.py/" becomes
        # "__init__.py"), so the check above is not enough: check the file actually found.
        full_path, stat_result = super().lookup_path(path)
        is_file = stat_result is not None and stat.S_ISREG(stat_result.st_mode)
        if is_file and not full_path.endswith(SERVED_SUFFIXES):
            return "", None
        return full_path, stat_result


async def _to_ui(_request: Request) -> Response:
    return RedirectResponse("/ui/", status_code=307)


_PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_MODULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\.js$")


@dataclass(frozen=True)
class UiPackage:
    """A plugin's pages: ``directory`` served under ``/ui/pages/<name>/``, ``modules``
    imported when the interface loads."""

    name: str
    directory: Path
    modules: tuple[str, ...]

    def __post_init__(self) -> None:
        if not _PACKAGE_NAME.match(self.name):
            raise ValueError(f"UI package name {self.name!r}: use a-z, 0-9, - and _")
        if not self.directory.is_dir():
            raise ValueError(f"UI package {self.name!r}: {self.directory} is not a folder")
        for module in self.modules:
            if not _MODULE_NAME.match(module) or not (self.directory / module).is_file():
                raise ValueError(f"UI package {self.name!r}: no module {module!r} in its folder")


class RegisterUi(Protocol):
    """The ``register`` callback of the ``register_ui`` hook."""

    def __call__(self, name: str, directory: Path | str, modules: Sequence[str]) -> None:
        """Serve ``directory`` under ``/ui/pages/<name>/`` and import ``modules`` from it."""


def index_module(packages: Sequence[UiPackage]) -> str:
    """``/ui/pages/index.js``: one import per registered page module."""
    lines = ["// The pages registered by this server's plugins (register_ui), in plugin order."]
    for package in packages:
        lines.extend(f'import "./{package.name}/{module}";' for module in package.modules)
    return "\n".join(lines) + "\n"


def routes(packages: Sequence[UiPackage] = ()) -> list[BaseRoute]:
    """``/ui/`` serves the shell, ``/ui/pages/<name>/`` each plugin's pages and
    ``/ui/pages/index.js`` the list of page modules; ``GET /`` and ``/ui`` redirect to ``/ui/``.

    ``Route("/")`` only matches HTTP requests, so the JSON websocket on ``/`` is unaffected.
    """
    index = index_module(packages).encode()

    async def pages_index(request: Request) -> Response:
        return Response(index, media_type="text/javascript", headers=headers_for(request.scope))

    return [
        Route("/", _to_ui, methods=["GET", "HEAD"]),
        Route("/ui", _to_ui, methods=["GET", "HEAD"]),
        Route("/ui/pages/index.js", pages_index, methods=["GET", "HEAD"]),
        *(
            Mount(f"/ui/pages/{package.name}", app=UiFiles(directory=package.directory))
            for package in packages
        ),
        Mount("/ui", app=UiFiles(directory=ASSETS, html=True), name="ui"),
    ]
