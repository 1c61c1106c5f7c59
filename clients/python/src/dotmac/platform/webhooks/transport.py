"""How an encoded event reaches the webhook system: RabbitMQ with publisher
confirms, or ingest's ``POST /api/v1/events``. Both are idempotent by
``event_id`` (the AMQP ``message_id`` is the event id too)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Protocol

import aio_pika
import httpx
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from .config import BusSettings
from .errors import PublishError, PublishRejected

__all__ = ["AmqpTransport", "HttpTransport", "Transport", "make_transport"]

log = logging.getLogger("dotmac.platform.webhooks")


class Transport(Protocol):
    """Hands one encoded event (the ``POST /events`` JSON body) over durably."""

    async def send(self, event_type: str, event_id: str, body: bytes) -> None:
        """Returns once the webhook system has the event, else raises
        :class:`PublishError` (transient) or :class:`PublishRejected`."""
        ...

    async def close(self) -> None:
        """Releases connections; a later ``send`` reconnects."""
        ...


def make_transport(settings: BusSettings) -> Transport:
    """The transport the settings select."""
    if settings.transport == "http":
        assert settings.api_url is not None and settings.publisher_key is not None
        return HttpTransport(settings.api_url, settings.publisher_key, settings.timeout)
    return AmqpTransport(settings.amqp_urls, settings.amqp_prefix, settings.timeout)


class AmqpTransport:
    """Publishes to the topic exchange ``{prefix}.events``: routing key = event
    type, persistent, ``mandatory`` (an unroutable event is an error, not a
    loss), and waits for the broker's publisher confirm. One connection and
    one confirm-mode channel, shared by concurrent publishes and re-opened on
    the next publish after a loss."""

    def __init__(self, urls: tuple[str, ...], prefix: str, timeout: float) -> None:
        self._urls = urls
        self._exchange_name = f"{prefix}.events"
        self._timeout = timeout
        self._lock = asyncio.Lock()
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None

    async def send(self, event_type: str, event_id: str, body: bytes) -> None:
        exchange = await self._ready_exchange()
        message = aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=event_id,
            timestamp=datetime.now(timezone.utc),
            app_id="dotmac-webhooks-python",
        )
        try:
            await exchange.publish(message, routing_key=event_type, mandatory=True, timeout=self._timeout)
        except aio_pika.exceptions.PublishError as err:
            raise PublishError(
                f"no queue is bound to {self._exchange_name} for {event_type!r} (is webhooks-ingest running?)"
            ) from err
        except aio_pika.exceptions.DeliveryError as err:
            raise PublishError(f"the broker refused the event (nack): {err}") from err
        except (asyncio.TimeoutError, aio_pika.exceptions.AMQPError, ConnectionError, OSError) as err:
            await self._forget()
            raise PublishError(f"publishing to RabbitMQ failed: {err!r}") from err

    async def close(self) -> None:
        async with self._lock:
            await self._forget()

    async def _ready_exchange(self) -> AbstractExchange:
        async with self._lock:
            if (
                self._exchange is not None
                and self._channel is not None
                and not self._channel.is_closed
                and self._connection is not None
                and not self._connection.is_closed
            ):
                return self._exchange
            await self._forget()
            errors = []
            for url in self._urls:
                try:
                    connection = await aio_pika.connect(url, timeout=self._timeout)
                except (asyncio.TimeoutError, aio_pika.exceptions.AMQPError, ConnectionError, OSError) as err:
                    errors.append(repr(err))
                    continue
                try:
                    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                    # The same declaration as ingest's (durable topic), so either may come first.
                    exchange = await channel.declare_exchange(
                        self._exchange_name, aio_pika.ExchangeType.TOPIC, durable=True, timeout=self._timeout
                    )
                except BaseException:
                    await connection.close()
                    raise
                self._connection, self._channel, self._exchange = connection, channel, exchange
                return exchange
            raise PublishError(f"cannot connect to RabbitMQ: {'; '.join(errors)}")

    async def _forget(self) -> None:
        connection, self._connection, self._channel, self._exchange = self._connection, None, None, None
        if connection is not None and not connection.is_closed:
            try:
                await connection.close()
            except Exception:  # noqa: BLE001 - already broken; nothing more to do
                log.debug("closing a broken AMQP connection failed", exc_info=True)


class HttpTransport:
    """Publishes through ingest's ``POST /api/v1/events`` with a publisher key;
    202 (new) and 200 (an ``event_id`` already accepted) both mean durable."""

    def __init__(self, api_url: str, publisher_key: str, timeout: float) -> None:
        base = api_url.rstrip("/")
        self._url = (base if base.endswith("/api/v1") else base + "/api/v1") + "/events"
        self._headers = {
            "Authorization": f"Bearer {publisher_key}",
            "Content-Type": "application/json",
            "User-Agent": "dotmac-webhooks-python",
        }
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None

    async def send(self, event_type: str, event_id: str, body: bytes) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout)
        try:
            response = await self._client.post(self._url, content=body, headers=self._headers)
        except httpx.HTTPError as err:
            raise PublishError(f"POST {self._url} failed: {err!r}") from err
        if response.status_code in (200, 202):
            return
        code, message = _error_of(response)
        text = f"POST {self._url} answered {response.status_code}: {code or ''} {message or ''}".strip()
        if response.status_code in (408, 429) or response.status_code >= 500:
            raise PublishError(text)
        raise PublishRejected(text, status=response.status_code, code=code)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def _error_of(response: httpx.Response) -> tuple[str | None, str | None]:
    """The contract's ``{"error": {"code", "message"}}``, when the body has it."""
    try:
        error = response.json().get("error", {})
        return error.get("code"), error.get("message")
    except (ValueError, AttributeError):
        return None, response.text[:200] or None
