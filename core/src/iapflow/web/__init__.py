"""The web interface: static assets (this folder) served under ``/ui``.

The pages are plain ES modules that talk to the server only through the JSON websocket
protocol and the HTTP file routes, with the signed-in user's token, like any other client.
docs/web-ui.md describes the pages and how to add one.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

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


def routes() -> list[BaseRoute]:
    """``/ui/`` serves the assets; ``GET /`` and ``/ui`` redirect there.

    ``Route("/")`` only matches HTTP requests, so the JSON websocket on ``/`` is unaffected.
    """
    return [
        Route("/", _to_ui, methods=["GET", "HEAD"]),
        Route("/ui", _to_ui, methods=["GET", "HEAD"]),
        Mount("/ui", app=UiFiles(directory=ASSETS, html=True), name="ui"),
    ]
