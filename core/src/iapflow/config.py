"""Deployment configuration: one TOML file plus ``IAPFLOW_<SECTION>__<KEY>`` environment overrides.

Every value is validated at startup; a wrong one fails with its dotted key and the reason.
The kernel's sections are declared here; plugins declare theirs with the ``register_config``
hook (``[queues]``, ``[files]``, ``[grpc]``...), and :meth:`Config.bind` validates those once the
plugins are loaded. Backend sections (``[storage]``, ``[messaging]``) name their backend and
pass the remaining keys to that plugin, which validates them itself.
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Self, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from iapflow.errors import ConfigError
from iapflow.secure.history import DEFAULT_SKIP_COLLECTIONS

ENV_PREFIX = "IAPFLOW_"


S = TypeVar("S", bound=BaseModel)


class Section(BaseModel):
    """A config section that refuses unknown keys: the base of a plugin's own section model."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class BackendSection(BaseModel):
    """A section that names a backend: its other keys are the backend's own options."""

    model_config = ConfigDict(extra="allow")

    def options(self) -> dict[str, Any]:
        """The backend's own keys (everything but the one naming the backend)."""
        return dict(self.model_extra or {})


class ServerConfig(Section):
    """``[server]``: where the HTTP/websocket server listens and keeps its files."""

    host: str = "127.0.0.1"
    port: int = Field(3000, ge=0, le=65535)
    data_dir: Path = Path("~/.local/share/iapflow")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"


class StorageConfig(BackendSection):
    """``[storage]``: ``backend`` names the storage plugin; other keys belong to that plugin."""

    backend: str = "mongo"


class AuthConfig(Section):
    """``[auth]``: tokens, passwords and sign-in policy."""

    jwt_secret: str = ""
    token_lifetime_seconds: int = Field(300, ge=10)
    long_token_lifetime_days: int = Field(365, ge=1)
    refresh_before_seconds: int = Field(60, ge=1)
    bcrypt_rounds: int = Field(12, ge=4, le=16)
    signin_failure_delay_seconds: float = Field(1.0, ge=0)
    first_signin_becomes_admin: bool = False
    role_cache_seconds: float = Field(60.0, ge=0)
    revocation_check_seconds: float = Field(1.0, ge=0)
    """How often each server looks for tokens revoked on another server sharing the store
    (0: never; the server that revokes still closes its own connections)."""
    admin_username: str = ""
    admin_password: str = ""


class WebsocketConfig(Section):
    """``[websocket]``: JSON protocol limits and timers."""

    package_size: int = Field(25000, ge=100)
    max_frame_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_unsigned_message_bytes: int = Field(256 * 1024, ge=1024)
    """Before sign-in, a connection's messages (and all its unfinished ones together) may be
    at most this long."""
    max_pending_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    """All unfinished incoming messages of every connection together (server-wide)."""
    signin_timeout_seconds: float = Field(120, gt=0)
    max_inflight: int = Field(64, ge=1)
    ping_interval_seconds: float = Field(20, gt=0)
    ping_timeout_seconds: float = Field(20, gt=0)


class QueryConfig(Section):
    """``[query]``: result size defaults and caps."""

    default_top: int = Field(100, ge=1)
    max_top: int = Field(10000, ge=1)
    max_time_ms: int = Field(30000, ge=0)
    """How long the store may work on one client read (query, count, distinct, aggregate);
    0 means no limit."""

    @model_validator(mode="after")
    def _default_within_max(self) -> Self:
        if self.default_top > self.max_top:
            raise ValueError(
                f"default_top ({self.default_top}) is larger than max_top ({self.max_top})"
            )
        return self


class MessagingConfig(BackendSection):
    """``[messaging]``: ``backend`` names the broker plugin; other keys belong to that plugin."""

    backend: str = "memory"


class HistoryConfig(Section):
    """``[history]``: versions of documents in ``<collection>_hist`` (docs/history.md)."""

    snapshot_every: int = Field(1000, ge=1)
    skip_collections: list[str] = Field(default_factory=lambda: list(DEFAULT_SKIP_COLLECTIONS))


class PluginsConfig(Section):
    """``[plugins]``: ``blocked`` names installed plugins that must not load."""

    blocked: list[str] = Field(default_factory=list)


class Config(BaseModel):
    """The whole deployment configuration: the kernel's sections as fields, the plugins'
    sections (after :meth:`bind`) through :meth:`section`."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    server: ServerConfig = Field(default_factory=ServerConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    websocket: WebsocketConfig = Field(default_factory=WebsocketConfig)
    query: QueryConfig = Field(default_factory=QueryConfig)
    messaging: MessagingConfig = Field(default_factory=MessagingConfig)
    history: HistoryConfig = Field(default_factory=HistoryConfig)
    plugins: PluginsConfig = Field(default_factory=PluginsConfig)

    _sections: dict[type[BaseModel], BaseModel] = PrivateAttr(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        """The data directory with ``~`` expanded."""
        return self.server.data_dir.expanduser()

    def bind(self, sections: Iterable[tuple[str, type[BaseModel]]]) -> None:
        """Validate the plugins' sections (``register_config``) from the loaded values; a
        section nobody declared, or a bad value in one, raises :class:`ConfigError`."""
        declared = dict(sections)
        raw = dict(self.model_extra or {})
        for name in raw:
            if name not in declared:
                known = [*type(self).model_fields, *declared]
                raise ConfigError(name, "unknown section" + _did_you_mean(name, known))
        bound: dict[type[BaseModel], BaseModel] = {}
        for name, model in declared.items():
            values = raw.get(name, {})
            if not isinstance(values, Mapping):
                raise ConfigError(name, f"must be a table, got {values!r}")
            bound[model] = _validate(model, values, name)
        self._sections = bound

    def section(self, model: type[S]) -> S:
        """The bound section whose model is ``model``."""
        try:
            return cast(S, self._sections[model])
        except KeyError:
            raise LookupError(
                f"config section {model.__name__} is not declared: is the plugin that "
                "registers it loaded (and the config bound to the plugins)?"
            ) from None


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _validate(model: type[S], values: Mapping[str, Any], prefix: str = "") -> S:
    """``values`` as ``model``, or a ConfigError naming the first bad key and what to do."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [str(part) for part in error["loc"]]
        key = ".".join([prefix, *loc] if prefix else loc) or "(root)"
        reason = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            owner: type[BaseModel] = model
            for part in loc[:-1]:
                annotation = (
                    owner.model_fields[part].annotation if part in owner.model_fields else None
                )
                if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                    break
                owner = annotation
            reason = "unknown key" + (
                _did_you_mean(loc[-1], owner.model_fields)
                or " (check its spelling against docs/configuration.md)"
            )
        else:
            reason = f"{reason} (got {error.get('input')!r})"
        raise ConfigError(key, reason) from None


def _env_value(text: str) -> Any:
    stripped = text.strip()
    if stripped[:1] in "[{":
        try:
            return json.loads(stripped)
        except ValueError:
            return text
    return text


def env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Collect ``IAPFLOW_SECTION__KEY=value`` variables into ``{section: {key: value}}``."""
    found: dict[str, dict[str, Any]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].partition("__")
        found.setdefault(section.lower(), {})[key.lower()] = _env_value(value)
    # The two documented shortcuts for the first admin.
    for short, key in (("ADMIN_USERNAME", "admin_username"), ("ADMIN_PASSWORD", "admin_password")):
        if ENV_PREFIX + short in environ:
            found.setdefault("auth", {})[key] = environ[ENV_PREFIX + short]
    return found


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_config(data: Mapping[str, Any]) -> Config:
    """Validate a config mapping's kernel sections; raise :class:`ConfigError` naming the first
    bad key. Plugins' sections are checked by :meth:`Config.bind`."""
    return _validate(Config, data)


def load_config(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Load the TOML file at ``path`` (if any), apply environment and then explicit overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("--config", f"file {file} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("--config", f"{file} is not valid TOML: {exc}") from None
    data = _merge(data, env_overrides(os.environ if environ is None else environ))
    if overrides:
        data = _merge(data, overrides)
    return build_config(data)
