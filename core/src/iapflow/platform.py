"""The running platform: config, plugins, storage, auth, data layer and dispatcher, wired once."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from iapflow import telemetry
from iapflow.auth.revocation import RevocationWatch
from iapflow.auth.service import AuthService
from iapflow.auth.tokens import TokenService, check_secret, load_secret
from iapflow.budget import BufferBudget
from iapflow.config import Config
from iapflow.contracts.broker import Broker, BrokerContext, BrokerError
from iapflow.contracts.private import private_dir
from iapflow.contracts.storage import Document, Storage, StorageContext
from iapflow.dispatch import Dispatcher
from iapflow.errors import StartupError, StorageError
from iapflow.plugins import Plugins, require
from iapflow.secure.history import History
from iapflow.secure.layer import DataLayer
from iapflow.secure.principals import PrincipalStore
from iapflow.session import CURRENT
from iapflow.stash import Stash

if TYPE_CHECKING:
    from iapflow.session import Session

log = logging.getLogger("iapflow")


class Platform:
    """Everything a request needs, built from a config and a set of plugins."""

    def __init__(self, config: Config, plugins: Plugins | None = None) -> None:
        self.config = config
        self.plugins = plugins or Plugins(blocked=config.plugins.blocked)
        config.bind(self.plugins.config_sections().items())
        self.sessions: dict[str, Session] = {}
        self.buffers = BufferBudget(config.websocket.max_pending_bytes)
        """Bytes every connection holds for unfinished incoming messages (server-wide)."""
        self.stash = Stash()
        """Per-platform state of plugins (their services, timers, servers), by typed key."""
        self.public_config: dict[str, Any] = {}
        """What ``/config`` and the ``signin`` reply tell clients besides the kernel's keys;
        plugins add theirs in ``prepare`` (``supports_watch``, ``protocols``...)."""
        self.backends: dict[str, str] = {
            "storage": config.storage.backend,
            "messaging": config.messaging.backend,
        }
        """The backend selected for each kind; plugins that select one add it in ``prepare``
        (``iapflow plugins`` and ``/-/plugins`` show it)."""
        self._storage: Storage | None = None
        self._broker: Broker | None = None
        self._broker_started = False
        self._secret = ""
        self._auth_providers: list[Any] = []
        self._auth: AuthService | None = None
        self._data: DataLayer | None = None
        self._dispatcher: Dispatcher | None = None
        self._revocations: RevocationWatch | None = None

    # Typed accessors: using a part before start() is a programming error.
    @property
    def storage(self) -> Storage:
        """The storage backend (after :meth:`prepare`)."""
        assert self._storage is not None, "platform not prepared"
        return self._storage

    @property
    def broker(self) -> Broker:
        """The messaging backend (after :meth:`prepare`)."""
        assert self._broker is not None, "platform not prepared"
        return self._broker

    @property
    def auth(self) -> AuthService:
        """Tokens, principals and sign-in."""
        assert self._auth is not None, "platform not started"
        return self._auth

    @property
    def data(self) -> DataLayer:
        """The secure data layer."""
        assert self._data is not None, "platform not started"
        return self._data

    @property
    def dispatcher(self) -> Dispatcher:
        """The command dispatcher."""
        assert self._dispatcher is not None, "platform not started"
        return self._dispatcher

    @property
    def secret(self) -> str:
        """The server's signing secret (after :meth:`start_storage`)."""
        assert self._secret, "platform not started"
        return self._secret

    def prepare(self) -> None:
        """Resolve backends and check the config without starting anything or writing any
        file: a missing plugin, a bad backend option or a bad secret fails here, before any
        server or store starts."""
        if self._storage is not None:
            return
        check_secret(self.config.auth.jwt_secret)
        factory = require(self.plugins.storage_backends(), self.config.storage.backend, "storage")
        storage = factory(self.config.storage.options(), StorageContext(self.config.data_dir))
        self._auth_providers = [
            provider for _name, provider in self.plugins.auth_providers().items()
        ]
        messaging = self.config.messaging
        broker_factory = require(self.plugins.brokers(), messaging.backend, "messaging")
        broker = broker_factory(messaging.options(), BrokerContext(self.config.data_dir))
        self._broker = telemetry.traced_broker(broker, self.plugins.wrappers("wrap_broker"))
        self._storage = telemetry.traced_storage(storage, self.plugins.wrappers("wrap_storage"))
        self.plugins.prepare(self)

    async def start_storage(self) -> None:
        """Start the configured storage backend and auth (all the CLI's user commands need)."""
        self.prepare()
        private_dir(self.config.data_dir)
        self._secret = load_secret(self.config.auth.jwt_secret, self.config.data_dir)
        try:
            await self.storage.start()
        except StorageError as exc:
            backend = self.config.storage.backend
            raise StartupError(f"storage backend {backend!r} did not start: {exc}") from exc
        auth = self.config.auth
        tokens = TokenService(
            self._secret, auth.token_lifetime_seconds, auth.long_token_lifetime_days * 86400
        )
        self._auth = AuthService(
            self.config,
            PrincipalStore(self.storage),
            tokens,
            self._authenticate,
            self._signin_event,
        )
        await self._auth.ensure_builtins()
        await self._auth.ensure_admin_from_config()

    async def start(self) -> None:
        """Start storage, ensure built-ins, build the data layer and dispatcher, start the
        broker, run ``startup``.

        If a step fails, what was started is stopped again before the error propagates.
        """
        try:
            await self.start_storage()
            self._data = DataLayer(
                self.storage,
                bcrypt_rounds=self.config.auth.bcrypt_rounds,
                on_change=self._document_changed,
                on_bulk_change=self._bulk_changed,
                resolve_principal=self.auth.principal_ids,
                role_name=self.auth.roles.name_of,
                history=History(
                    self.storage,
                    snapshot_every=self.config.history.snapshot_every,
                    skip_collections=self.config.history.skip_collections,
                ),
                max_time_ms=self.config.query.max_time_ms,
            )
            for collection, factory in self.plugins.collection_rules():
                self._data.add_rules(collection, factory(self))
            self._dispatcher = Dispatcher(
                self, self.plugins.commands(), self.plugins.wrappers("wrap_command")
            )
            try:
                await self.broker.start()
            except BrokerError as exc:
                backend = self.config.messaging.backend
                raise StartupError(f"messaging backend {backend!r} did not start: {exc}") from exc
            self._broker_started = True
            self._revocations = RevocationWatch(
                self.auth.principals,
                self.revoke_sessions,
                self.config.auth.revocation_check_seconds,
            )
            self._revocations.start()
            await self.plugins.startup(self)
        except BaseException:
            await self.stop()
            raise
        log.info("iapflow started: storage %s", self.config.storage.backend)

    async def stop(self) -> None:
        """Close sessions, run ``shutdown`` hooks, stop storage."""
        if self._revocations is not None:
            await self._revocations.stop()
            self._revocations = None
        for session in list(self.sessions.values()):
            await session.close(1001, "server shutting down")
        if self._dispatcher is not None:
            await self.plugins.shutdown(self)
        if self._broker is not None and self._broker_started:
            self._broker_started = False
            await self._broker.stop()
        if self._storage is not None:
            await self._storage.stop()
            self._storage = None

    async def _authenticate(self, username: str, password: str) -> Document | None:
        for provider in self._auth_providers:
            user: Document | None = await provider.authenticate(self, username, password)
            if user is not None:
                return user
        return None

    async def _signin_event(self, event: dict[str, Any]) -> None:
        await self.plugins.on_signin(self, event)

    async def _document_changed(self, collection: str, operation: str, document: Document) -> None:
        if collection == "users":
            self.auth.roles.invalidate()
            document = {k: v for k, v in document.items() if k != "passwordhash"}
            if operation == "delete":
                await self._close_sessions_of({str(document.get("_id"))})
            elif document.get("_type") == "user":
                await self.revoke_sessions(document)
        await self.plugins.on_document_change(self, collection, operation, document)

    async def _bulk_changed(self, collection: str) -> None:
        if collection == "users":
            self.auth.roles.invalidate()
            await self.users_changed_in_bulk()

    async def users_changed_in_bulk(self) -> None:
        """After a bulk write to ``users``: close the sockets of users now disabled or gone."""
        signed_in = {s.principal.id for s in self.sessions.values() if s.principal is not None}
        if not signed_in:
            return
        active = await self.storage.find(
            "users",
            {"_id": {"$in": sorted(signed_in)}, "disabled": {"$ne": True}},
            projection={"_id": 1},
        )
        await self._close_sessions_of(signed_in - {str(doc["_id"]) for doc in active})

    async def revoke_sessions(self, user: Document) -> None:
        """Close the connections that ``user`` (as stored now: disabled, or in a new token
        epoch) no longer lets stay signed in."""
        current = CURRENT.get()
        for session in list(self.sessions.values()):
            if not session.revoked_by(user):
                continue
            principal = session.principal
            if (
                session is current
                and principal is not None
                and principal.id == str(user.get("_id"))
                and not principal.impostor
                and not user.get("disabled")
            ):
                await session.renew()  # the user changed its own password on this connection
            else:
                await session.close(1008, "token revoked: user disabled or password changed")

    async def _close_sessions_of(self, user_ids: set[str]) -> None:
        for session in list(self.sessions.values()):
            if session.principal is not None and session.principal.id in user_ids:
                await session.close(1008, "user disabled or deleted")
