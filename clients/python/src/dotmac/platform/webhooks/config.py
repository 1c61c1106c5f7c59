"""Settings of the event bus, read from the environment.

=============================  ===========================================
``WEBHOOKS_AMQP_URL``          RabbitMQ URL(s), comma-separated nodes of one
                               cluster tried in turn; selects AMQP publishing
``WEBHOOKS_API_URL``           ingest's API (``http://host:8080`` or
                               ``…/api/v1``); selects HTTP publishing
``WEBHOOKS_PUBLISHER_KEY``     publisher API key, required with the API URL
``AMQP_URL``                   used when neither of the above is set
                               (default ``amqp://guest:guest@127.0.0.1:5672/%2f``)
``WEBHOOKS_AMQP_PREFIX``       exchange prefix, else ``AMQP_PREFIX``, else
                               ``webhooks`` (events go to ``{prefix}.events``)
``WEBHOOKS_PUBLISH_TIMEOUT``   seconds one publish may take (default 10)
``WEBHOOKS_OUTBOX_RELAY``      ``false`` to not start the in-process outbox
                               relay (run ``python -m
                               dotmac.platform.webhooks.relay`` instead)
=============================  ===========================================
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from .errors import ConfigurationError

__all__ = ["BusSettings", "DEFAULT_AMQP_URL"]

#: The services' own default broker.
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"

_PREFIX = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class BusSettings:
    """How the bus reaches the webhook system."""

    transport: Literal["amqp", "http"] = "amqp"
    amqp_urls: tuple[str, ...] = (DEFAULT_AMQP_URL,)
    amqp_prefix: str = "webhooks"
    api_url: str | None = None
    publisher_key: str | None = None
    timeout: float = 10.0
    outbox_relay: bool = True

    def __post_init__(self) -> None:
        if self.transport == "http" and (not self.api_url or not self.publisher_key):
            raise ConfigurationError("HTTP publishing needs WEBHOOKS_API_URL and WEBHOOKS_PUBLISHER_KEY")
        if self.transport == "amqp" and not self.amqp_urls:
            raise ConfigurationError("AMQP publishing needs WEBHOOKS_AMQP_URL or AMQP_URL")
        if not _PREFIX.match(self.amqp_prefix):
            raise ConfigurationError("the AMQP prefix may hold letters, digits, '_', '-' and '.'")
        if not self.timeout > 0:
            raise ConfigurationError("WEBHOOKS_PUBLISH_TIMEOUT must be a positive number of seconds")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BusSettings:
        """Reads the variables in this module's table."""
        env = os.environ if environ is None else environ

        def var(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        prefix = var("WEBHOOKS_AMQP_PREFIX") or var("AMQP_PREFIX") or "webhooks"
        try:
            timeout = float(var("WEBHOOKS_PUBLISH_TIMEOUT") or "10")
        except ValueError:
            raise ConfigurationError("WEBHOOKS_PUBLISH_TIMEOUT must be a number of seconds") from None
        relay_flag = (var("WEBHOOKS_OUTBOX_RELAY") or "true").lower()
        if relay_flag not in {"true", "false", "1", "0", "yes", "no", "on", "off"}:
            raise ConfigurationError("WEBHOOKS_OUTBOX_RELAY must be true or false")
        relay = relay_flag in {"true", "1", "yes", "on"}

        amqp_url = var("WEBHOOKS_AMQP_URL")
        api_url = var("WEBHOOKS_API_URL")
        if amqp_url is None and api_url is not None:
            return cls(
                transport="http",
                api_url=api_url,
                publisher_key=var("WEBHOOKS_PUBLISHER_KEY"),
                amqp_prefix=prefix,
                timeout=timeout,
                outbox_relay=relay,
            )
        urls = amqp_url or var("AMQP_URL") or DEFAULT_AMQP_URL
        return cls(
            transport="amqp",
            amqp_urls=tuple(u.strip() for u in urls.split(",") if u.strip()),
            amqp_prefix=prefix,
            timeout=timeout,
            outbox_relay=relay,
        )
