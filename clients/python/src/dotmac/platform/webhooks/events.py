"""The event bus platform modules publish with, as the guide writes it::

    from dotmac.platform.webhooks.events import get_event_bus
    from dotmac.platform.webhooks.models import WebhookEvent

    await get_event_bus().publish(
        event_type=WebhookEvent.INVOICE_CREATED.value,
        event_data={"invoice_id": "inv_1", "amount": 99.5, "currency": "USD"},
        tenant_id=tenant_id,
        db=db,  # optional: through the transactional outbox
    )

Without ``db`` the event is published at once (AMQP with publisher confirms,
or HTTP) and ``publish`` returns when the webhook system has it durably. With
``db`` it goes through the module's ``webhook_outbox`` table (see
:mod:`dotmac.platform.webhooks.outbox`) and a relay task started by the bus
publishes it; ``publish`` returns once the row is written.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from .config import BusSettings
from .errors import PublishError, PublishRejected
from .models import WebhookEvent
from .outbox import OutboxRelay, OutboxRow, OutboxStore, session_engine, stage
from .transport import Transport, make_transport

__all__ = ["EventBus", "get_event_bus", "new_event_id", "set_event_bus"]

log = logging.getLogger("dotmac.platform.webhooks")

_EVENT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_RETRY_DELAYS = (0.2, 1.0)


def new_event_id() -> str:
    """``evt_`` + a UUIDv7 (time-ordered) in hex, as the services make them."""
    millis = time.time_ns() // 1_000_000
    value = (millis & (2**48 - 1)) << 80 | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return f"evt_{value:032x}"


def encode_event(
    event_type: str | WebhookEvent,
    event_data: Mapping[str, Any],
    tenant_id: str,
    event_id: str,
    metadata: Mapping[str, Any] | None,
) -> tuple[str, bytes]:
    """Validates an event and returns (event_type, the ``POST /events`` JSON body)."""
    kind = event_type.value if isinstance(event_type, WebhookEvent) else event_type
    if not isinstance(kind, str) or not kind.strip():
        raise ValueError("event_type must be a non-empty string, e.g. WebhookEvent.INVOICE_CREATED.value")
    if kind.startswith("webhook."):
        raise PublishRejected(f"{kind!r}: webhook.* event types are sent by the platform only", code="validation_failed")
    if not isinstance(tenant_id, str) or not tenant_id.strip():
        raise ValueError("tenant_id must be a non-empty string")
    if not _EVENT_ID.match(event_id):
        raise ValueError("event_id must be 1-128 of A-Z a-z 0-9 _ . : -")
    if not isinstance(event_data, Mapping):
        raise ValueError("event_data must be a JSON object (a dict)")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ValueError("metadata must be a JSON object (a dict) or None")
    message: dict[str, Any] = {
        "event_type": kind,
        "event_data": dict(event_data),
        "tenant_id": tenant_id,
        "event_id": event_id,
    }
    if metadata is not None:
        message["metadata"] = dict(metadata)
    try:
        body = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"event_data and metadata must be JSON-serialisable: {err}") from None
    return kind, body.encode("utf-8")


class EventBus:
    """Publishes events to the webhook system. One per process is enough
    (:func:`get_event_bus`); it connects lazily, on the running event loop,
    and reconnects after a loss or when used from a new event loop."""

    def __init__(self, settings: BusSettings | None = None) -> None:
        self.settings = settings or BusSettings.from_env()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: Transport | None = None
        self._relays: dict[Engine, tuple[OutboxRelay, asyncio.Task[None] | None]] = {}

    async def publish(
        self,
        event_type: str | WebhookEvent,
        event_data: Mapping[str, Any],
        tenant_id: str,
        db: AsyncSession | Session | None = None,
        event_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Publishes one event for ``tenant_id`` and returns its event id.

        ``event_id`` is the idempotency key (one is made when absent): the
        same id for the same tenant again creates nothing new, so retrying a
        failed call with it is safe. With ``db`` (a SQLAlchemy ``AsyncSession``
        or ``Session`` on PostgreSQL) the event goes through the outbox and
        leaves once its row is committed. Raises :class:`PublishError` when
        the webhook system cannot be reached, :class:`PublishRejected` when it
        refuses the event, ``ValueError`` for an invalid event.
        """
        event_id = event_id or new_event_id()
        kind, body = encode_event(event_type, event_data, tenant_id, event_id, metadata)
        self._bind_loop()
        if db is not None:
            relay = self._relay_for(session_engine(db), db)
            joined = await stage(db, OutboxRow(event_id, tenant_id, kind, body.decode("utf-8")), relay.on_commit)
            if not joined:
                relay.wake()
            return event_id
        await self.send(kind, event_id, body)
        return event_id

    async def send(self, event_type: str, event_id: str, body: bytes) -> None:
        """Hands an encoded event to the transport, retrying transient
        failures briefly (safe: the event id makes it idempotent)."""
        self._bind_loop()
        transport = self._ensure_transport()
        for delay in (*_RETRY_DELAYS, None):
            try:
                await transport.send(event_type, event_id, body)
                return
            except PublishRejected:
                raise
            except PublishError:
                if delay is None:
                    raise
                log.info("webhook publish failed; retrying event_id=%s", event_id, exc_info=True)
                await asyncio.sleep(delay)

    def start_relay(self, engine: Engine | AsyncEngine) -> OutboxRelay:
        """Starts (once per engine) the background task relaying that
        database's outbox, e.g. at application start-up so rows left by a
        previous process go out without waiting for the next publish. Needs
        a running event loop."""
        self._bind_loop()
        sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
        return self._relay_for(sync_engine, engine, force=True)

    async def close(self) -> None:
        """Stops the relay tasks and closes connections."""
        relays, self._relays = self._relays, {}
        tasks = [task for _, task in relays.values() if task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping anyway
                pass
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.close()

    def _ensure_transport(self) -> Transport:
        if self._transport is None:
            self._transport = make_transport(self.settings)
        return self._transport

    def _bind_loop(self) -> None:
        """Connections and tasks belong to one event loop; on a new loop
        (e.g. a second ``asyncio.run``), start afresh."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._transport = None
            self._relays = {}

    def _relay_for(
        self, engine: Engine, bind: Engine | AsyncEngine | AsyncSession | Session, force: bool = False
    ) -> OutboxRelay:
        start = self.settings.outbox_relay or force
        current = self._relays.get(engine)
        if current is not None:
            relay, task = current
            if (task is not None and not task.done()) or (task is None and not start):
                return relay
        else:
            use_async = isinstance(bind, (AsyncSession, AsyncEngine)) or engine.dialect.is_async
            relay = OutboxRelay(OutboxStore(AsyncEngine(engine) if use_async else engine), self.send)
        task = asyncio.get_running_loop().create_task(relay.run(), name="webhooks-outbox-relay") if start else None
        self._relays[engine] = (relay, task)
        return relay


_bus: EventBus | None = None
_bus_lock = threading.Lock()


def get_event_bus() -> EventBus:
    """The process-wide bus, configured from the environment on first use
    (see :mod:`dotmac.platform.webhooks.config`)."""
    global _bus
    with _bus_lock:
        if _bus is None:
            _bus = EventBus()
        return _bus


def set_event_bus(bus: EventBus | None) -> None:
    """Replaces the process-wide bus (``None``: re-read the environment on
    the next :func:`get_event_bus`). For tests and explicit configuration."""
    global _bus
    with _bus_lock:
        _bus = bus
