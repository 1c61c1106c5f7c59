"""Verifying received webhooks, for subscribers.

Every delivery carries two signatures:

* ``X-Webhook-Signature``: hex HMAC-SHA256 of the raw body, keyed by the
  UTF-8 bytes of the secret (the guide's scheme);
* ``webhook-id`` / ``webhook-timestamp`` / ``webhook-signature``: the
  `Standard Webhooks <https://www.standardwebhooks.com/>`_ scheme, signed
  anew on every attempt, whose timestamp must be within ``tolerance`` of now
  (this stops replays). After a secret rotation it holds, for 24 hours, one
  signature per secret, so a receiver still on the old secret verifies.

:func:`verify` accepts a delivery when the Standard Webhooks signature is
valid and fresh. A request without the ``webhook-*`` headers is checked
against ``X-Webhook-Signature`` alone (no replay protection).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from .errors import WebhookVerificationError

__all__ = ["DEFAULT_TOLERANCE_SECONDS", "sign", "verify"]

#: How far ``webhook-timestamp`` may be from now, either way (the Standard
#: Webhooks reference libraries use five minutes).
DEFAULT_TOLERANCE_SECONDS = 300

_SECRET_PREFIX = "whsec_"


def verify(
    payload: bytes | str,
    headers: Mapping[str, str] | Any,
    secret: str,
    *,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> dict[str, Any]:
    """Checks a received webhook and returns its parsed JSON body.

    ``payload`` is the raw request body, before any parsing; ``headers`` the
    request headers (any mapping; names are matched case-insensitively);
    ``secret`` the subscription's ``whsec_…`` signing secret. ``now`` (Unix
    seconds) is for tests. Raises :class:`WebhookVerificationError`.
    """
    body = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    lowered = {str(name).lower(): str(value) for name, value in _items(headers)}

    if "webhook-signature" in lowered or "webhook-id" in lowered or "webhook-timestamp" in lowered:
        _verify_standard(body, lowered, secret, tolerance, time.time() if now is None else now)
    elif "x-webhook-signature" in lowered:
        expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(lowered["x-webhook-signature"].strip().lower(), expected):
            raise WebhookVerificationError("X-Webhook-Signature does not match")
    else:
        raise WebhookVerificationError("no signature headers")

    try:
        parsed = json.loads(body)
    except ValueError as err:
        raise WebhookVerificationError(f"body is not JSON: {err}") from None
    if not isinstance(parsed, dict):
        raise WebhookVerificationError("body is not a JSON object")
    return parsed


def sign(msg_id: str, timestamp: int, payload: bytes | str, secret: str) -> str:
    """The Standard Webhooks signature (``v1,<base64>``) of one attempt:
    what ``webhook-signature`` holds for that id, timestamp and body."""
    body = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_standard_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def _verify_standard(body: bytes, headers: dict[str, str], secret: str, tolerance: int, now: float) -> None:
    msg_id = headers.get("webhook-id", "")
    raw_timestamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not msg_id or not raw_timestamp or not signatures:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(raw_timestamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    if timestamp < now - tolerance:
        raise WebhookVerificationError("webhook-timestamp is too old")
    if timestamp > now + tolerance:
        raise WebhookVerificationError("webhook-timestamp is too new")

    expected = sign(msg_id, timestamp, body, secret).split(",", 1)[1]
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return
    raise WebhookVerificationError("no webhook-signature matches")


def _standard_key(secret: str) -> bytes:
    """Standard Webhooks keys are the base64-decoded part after ``whsec_``."""
    encoded = secret[len(_SECRET_PREFIX) :] if secret.startswith(_SECRET_PREFIX) else secret
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("the secret is not whsec_ + base64") from None


def _items(headers: Mapping[str, str] | Any) -> list[tuple[Any, Any]]:
    items = getattr(headers, "items", None)
    if callable(items):
        return list(items())
    return list(headers)
