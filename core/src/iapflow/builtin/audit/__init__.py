"""Built-in plugin: audit. Sign-in attempts and impersonations written to the audit log (which
the secure data layer keeps, :mod:`iapflow.secure.audit`), and the audit log page."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from iapflow import hookimpl
from iapflow.secure import audit
from iapflow.web import RegisterUi

if TYPE_CHECKING:
    from iapflow.platform import Platform


@hookimpl
async def startup(platform: Platform) -> None:
    """Ensure the audit log's indexes."""
    await audit.ensure_indexes(platform)


@hookimpl
async def on_signin(platform: Platform, event: dict[str, Any]) -> None:
    """One ``signin`` entry per attempt; an ``impersonate`` entry when someone acts as another."""
    name = str(event.get("username") or event.get("userid") or "unknown")
    outcome = "succeeded" if event.get("success") else "failed"
    fields = {k: v for k, v in event.items() if k != "success"}
    await audit.record(
        platform,
        "signin",
        f"{name} sign-in {outcome}",
        event.get("userid"),
        name,
        success=bool(event.get("success")),
        provider="websocket",
        **fields,
    )
    if event.get("success") and event.get("type") == "impersonate":
        await audit.record(
            platform,
            "impersonate",
            f"{event.get('impostorid')} acts as {name}",
            event.get("userid"),
            name,
            **fields,
        )


@hookimpl
def register_ui(register: RegisterUi) -> None:
    """The audit log page."""
    register("audit", Path(__file__).parent / "ui", ["audit.js"])
