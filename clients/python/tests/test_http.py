"""Publishing over HTTP (``WEBHOOKS_API_URL`` + ``WEBHOOKS_PUBLISHER_KEY``),
and the errors a module sees."""

from __future__ import annotations

import pytest

from dotmac.platform.webhooks.config import BusSettings
from dotmac.platform.webhooks.errors import ConfigurationError, PublishError, PublishRejected
from dotmac.platform.webhooks.events import EventBus
from dotmac.platform.webhooks.models import WebhookEvent
from dotmac.platform.webhooks.verify import verify

from .support import Receiver, System


async def test_http_publishing_reaches_a_subscribed_receiver(system: System, receiver: Receiver, tenant: str) -> None:
    subscription = system.subscribe(system.tenant_key(tenant), receiver.url, ["payment.*"])
    bus = EventBus(BusSettings.from_env({"WEBHOOKS_API_URL": system.api_url, "WEBHOOKS_PUBLISHER_KEY": system.publisher_key}))
    try:
        event_id = await bus.publish(
            WebhookEvent.PAYMENT_SUCCEEDED, {"payment_id": "pay_1", "amount": 12.5}, tenant, metadata={"source": "billing"}
        )
        delivered = await receiver.wait_for_event(event_id)
        body = verify(delivered.body, delivered.headers, subscription["secret"])
        assert body["data"] == {"payment_id": "pay_1", "amount": 12.5}
        assert body["metadata"] == {"source": "billing"}
    finally:
        await bus.close()


async def test_an_unknown_event_type_is_refused_for_good(system: System, tenant: str) -> None:
    bus = EventBus(BusSettings(transport="http", api_url=system.api_url, publisher_key=system.publisher_key))
    try:
        with pytest.raises(PublishRejected) as refused:
            await bus.publish("invoice.teleported", {}, tenant)
        assert refused.value.status == 422
    finally:
        await bus.close()


async def test_a_wrong_publisher_key_is_refused(system: System, tenant: str) -> None:
    bus = EventBus(BusSettings(transport="http", api_url=system.api_url + "/", publisher_key="nope"))
    try:
        with pytest.raises(PublishRejected) as refused:
            await bus.publish(WebhookEvent.USER_DELETED, {}, tenant)
        assert refused.value.status == 401
    finally:
        await bus.close()


async def test_an_unreachable_broker_is_a_publish_error(tenant: str) -> None:
    bus = EventBus(BusSettings(amqp_urls=("amqp://guest:guest@127.0.0.1:1/%2f",), timeout=2))
    try:
        with pytest.raises(PublishError, match="cannot connect"):
            await bus.publish(WebhookEvent.USER_DELETED, {}, tenant)
    finally:
        await bus.close()


async def test_invalid_events_are_refused_before_sending(tenant: str) -> None:
    bus = EventBus(BusSettings(amqp_urls=("amqp://guest:guest@127.0.0.1:1/%2f",), timeout=2))
    with pytest.raises(PublishRejected, match="platform only"):
        await bus.publish("webhook.test", {}, tenant)
    with pytest.raises(ValueError, match="event_id"):
        await bus.publish(WebhookEvent.USER_DELETED, {}, tenant, event_id="has spaces")
    with pytest.raises(ValueError, match="JSON"):
        await bus.publish(WebhookEvent.USER_DELETED, {"when": object()}, tenant)
    with pytest.raises(ValueError, match="tenant_id"):
        await bus.publish(WebhookEvent.USER_DELETED, {}, "")


def test_settings_come_from_the_environment() -> None:
    amqp = BusSettings.from_env({"AMQP_URL": "amqp://a/%2f, amqp://b/%2f", "AMQP_PREFIX": "p1"})
    assert (amqp.transport, amqp.amqp_urls, amqp.amqp_prefix) == ("amqp", ("amqp://a/%2f", "amqp://b/%2f"), "p1")
    preferred = BusSettings.from_env({"AMQP_URL": "amqp://a/%2f", "WEBHOOKS_AMQP_URL": "amqp://w/%2f"})
    assert preferred.amqp_urls == ("amqp://w/%2f",)
    http = BusSettings.from_env({"AMQP_URL": "amqp://a/%2f", "WEBHOOKS_API_URL": "http://x", "WEBHOOKS_PUBLISHER_KEY": "k"})
    assert http.transport == "http"
    assert BusSettings.from_env({}).amqp_urls == ("amqp://guest:guest@127.0.0.1:5672/%2f",)
    assert BusSettings.from_env({"WEBHOOKS_OUTBOX_RELAY": "false"}).outbox_relay is False
    with pytest.raises(ConfigurationError):
        BusSettings.from_env({"WEBHOOKS_API_URL": "http://x"})
    with pytest.raises(ConfigurationError):
        BusSettings.from_env({"AMQP_PREFIX": "bad prefix"})
