"""The ``iapflow`` command: serve, plugins, user add, --version."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

from iapflow import __version__
from iapflow.config import Config, load_config
from iapflow.errors import ApiError, StartupError


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    server: dict[str, Any] = {}
    for key in ("host", "port", "data_dir", "log_level"):
        value = getattr(args, key, None)
        if value is not None:
            server[key] = value
    return {"server": server} if server else {}


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, overrides=_overrides(args))


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server until interrupted."""
    import uvicorn

    from iapflow.app import create_app, uvicorn_config

    config = _config(args)
    logging.basicConfig(
        level=config.server.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    server = uvicorn.Server(uvicorn_config(create_app(config), config))
    print(
        f"iapflow {__version__} on http://{config.server.host}:{config.server.port} "
        f"(data in {config.data_dir}, storage {config.storage.backend})",
        file=sys.stderr,
    )
    server.run()
    return 0 if server.started else 1


def cmd_plugins(args: argparse.Namespace) -> int:
    """List plugins: distribution and version, the backends each provides (``*`` marks the
    configured one) and the hooks it implements."""
    from iapflow.errors import IapflowError
    from iapflow.platform import Platform

    config = _config(args)
    platform = Platform(config)
    try:
        platform.prepare()  # checks only: it starts and writes nothing
    except IapflowError as exc:
        print(f"warning: the config would not start: {exc}", file=sys.stderr)
    infos = platform.plugins.info(platform.backends)
    if args.json:
        print(json.dumps([vars(i) for i in infos], indent=2))
        return 0
    for info in infos:
        kind = "built-in" if info.builtin else "installed"
        backends = ", ".join(
            f"{k} {name}{'*' if info.selected.get(k) == name else ''}"
            for k, names in info.provides.items()
            for name in names
        )
        print(f"{info.name:26} {info.dist + ' ' + info.version:22} {kind:9} {backends}".rstrip())
        print(f"{'':26} hooks: {', '.join(info.hooks)}")
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    """Create a user (or reset its password) in the configured store while the server is stopped."""
    from iapflow.platform import Platform

    config = _config(args)

    async def run() -> None:
        platform = Platform(config)
        await platform.start_storage()
        try:
            await platform.auth.add_user(args.name, args.password, admin=args.admin)
        finally:
            await platform.stop()

    asyncio.run(run())
    role = " (admin)" if args.admin else ""
    print(f"user {args.name.strip().lower()}{role} saved")
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="TOML config file (default: built-in defaults)")
    parser.add_argument("--data-dir", dest="data_dir", help="data directory (server.data_dir)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for ``iapflow``."""
    parser = argparse.ArgumentParser(prog="iapflow", description="iapflow integration platform")
    parser.add_argument("--version", action="version", version=f"iapflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    _common(serve)
    serve.add_argument("--host", help="address to listen on (server.host)")
    serve.add_argument("--port", type=int, help="port to listen on (server.port)")
    serve.add_argument("--log-level", dest="log_level", help="debug, info, warning, error")
    serve.set_defaults(func=cmd_serve)

    plugins = sub.add_parser("plugins", help="list installed plugins")
    _common(plugins)
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.set_defaults(func=cmd_plugins)

    user = sub.add_parser("user", help="manage users while the server is stopped")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    add = user_sub.add_parser("add", help="create a user or reset its password")
    _common(add)
    add.add_argument("name", help="username")
    add.add_argument("--password", required=True, help="the password")
    add.add_argument("--admin", action="store_true", help="make the user a member of admins")
    add.set_defaults(func=cmd_user_add)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``iapflow`` command."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (StartupError, ApiError) as exc:
        print(f"iapflow: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
