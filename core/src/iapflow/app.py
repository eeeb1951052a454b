"""The ASGI app: the platform's lifespan plus the websocket and HTTP routes."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from iapflow import __version__, web
from iapflow.config import Config
from iapflow.platform import Platform
from iapflow.plugins import Plugins


class _Wrapped:
    """The ``wrap_asgi`` middlewares of the plugins, as one Starlette middleware (so that
    they see every request, websocket and the lifespan, inside Starlette's error handling)."""

    def __init__(self, app: ASGIApp, plugins: Plugins) -> None:
        self.app = plugins.wrap_asgi(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def create_app(config: Config, plugins: Plugins | None = None) -> Starlette:
    """Build the app for ``config``; the platform starts and stops with the app's lifespan."""
    platform = Platform(config, plugins)
    platform.prepare()

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await platform.start()
        try:
            yield
        finally:
            await platform.stop()

    async def config_endpoint(_request: Request) -> JSONResponse:
        return JSONResponse(
            {
                **platform.public_config,
                "version": __version__,
                "websocket_package_size": config.websocket.package_size,
            }
        )

    async def health(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "clients": len(platform.sessions)})

    async def plugins_endpoint(_request: Request) -> JSONResponse:
        return JSONResponse([vars(p) for p in platform.plugins.info(platform.backends)])

    routes: list[BaseRoute] = [
        Route("/config", config_endpoint),
        Route("/healthz", health),
        Route("/-/plugins", plugins_endpoint),
        *platform.plugins.routes(),
        *web.routes(platform.plugins.ui_packages()),
    ]
    middleware = []
    if platform.plugins.wrappers("wrap_asgi"):
        middleware.append(Middleware(_Wrapped, plugins=platform.plugins))
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
    app.state.platform = platform
    return app


def uvicorn_config(app: Starlette, config: Config, log_level: str | None = None) -> Any:
    """The uvicorn settings iapflow runs with: websocket limits and pings from ``config``."""
    import uvicorn

    ws = config.websocket
    settings = uvicorn.Config(
        app,
        host=config.server.host,
        port=config.server.port,
        log_level=log_level or config.server.log_level,
        ws_max_size=ws.max_frame_bytes * 4,
        ws_ping_interval=ws.ping_interval_seconds,
        ws_ping_timeout=ws.ping_timeout_seconds,
        lifespan="on",
    )
    # uvicorn's Config set up its loggers just now: add the filter after that.
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactSecrets) for f in access.filters):
        access.addFilter(RedactSecrets())
    return settings


_SECRET_PARAMETER = re.compile(r"(?i)([?&](?:jwt|token|ticket|password)=)[^&#\s]*")


def redact(text: str) -> str:
    """``text`` (a path with its query) with the values of token and password parameters
    replaced by ``***``."""
    return _SECRET_PARAMETER.sub(r"\1***", text)


class RedactSecrets(logging.Filter):
    """Keeps tokens out of the access log: ``/download/<id>?jwt=...`` (the documented way
    to link a file in a browser) would otherwise write the whole token to it."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the request path of an access log record."""
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True
