"""Exceptions raised by the publisher and the verifier."""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "OutboxError",
    "PublishError",
    "PublishRejected",
    "WebhookVerificationError",
]


class ConfigurationError(ValueError):
    """The environment (or the arguments) do not describe a usable bus."""


class PublishError(Exception):
    """The event could not be handed to the webhook system; retrying (with
    the same ``event_id``) may succeed."""


class PublishRejected(PublishError):
    """The webhook system refused the event for good (e.g. an unknown event
    type or a bad key); retrying the same event will not help."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class OutboxError(Exception):
    """The outbox cannot be used with this session (e.g. not PostgreSQL)."""


class WebhookVerificationError(Exception):
    """A received webhook's signature or timestamp does not verify."""
