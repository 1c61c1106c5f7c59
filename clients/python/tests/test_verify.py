"""``verify``: both signature schemes, the timestamp tolerance, rotation.

Vectors: the Standard Webhooks reference libraries' own sign tests, and
GitHub's documented HMAC-SHA256 example for the hex scheme."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from dotmac.platform.webhooks import WebhookVerificationError, verify
from dotmac.platform.webhooks.verify import sign

PY_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PY_ID, PY_TS, PY_BODY = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
PY_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

RS_SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
RS_ID, RS_TS = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553
RS_BODY = b'{"email":"test@example.com","username":"test_user"}'
RS_SIG = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="


def _standard(msg_id: str, ts: int, signature: str) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


@pytest.mark.parametrize(
    ("secret", "msg_id", "ts", "body", "expected"),
    [(PY_SECRET, PY_ID, PY_TS, PY_BODY, PY_SIG), (RS_SECRET, RS_ID, RS_TS, RS_BODY, RS_SIG)],
)
def test_standard_webhooks_reference_vectors_sign_and_verify(
    secret: str, msg_id: str, ts: int, body: bytes, expected: str
) -> None:
    assert sign(msg_id, ts, body, secret) == expected
    assert verify(body, _standard(msg_id, ts, expected), secret, now=ts + 10) == __import__("json").loads(body)


def test_the_hex_signature_matches_githubs_documented_vector() -> None:
    secret, body = "It's a Secret to Everybody", b'{"greeting": "Hello, World!"}'
    doc_vector = hmac.new(secret.encode(), b"Hello, World!", hashlib.sha256).hexdigest()
    assert doc_vector == "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert verify(body, {"X-Webhook-Signature": signature}, secret) == {"greeting": "Hello, World!"}
    with pytest.raises(WebhookVerificationError):
        verify(body, {"X-Webhook-Signature": doc_vector}, secret)


def test_header_names_are_matched_case_insensitively() -> None:
    headers = {k.upper(): v for k, v in _standard(PY_ID, PY_TS, PY_SIG).items()}
    assert verify(PY_BODY, headers, PY_SECRET, now=PY_TS)["test"] == 2432232314


@pytest.mark.parametrize("offset", [-301, 301])
def test_a_timestamp_outside_five_minutes_is_refused(offset: int) -> None:
    with pytest.raises(WebhookVerificationError, match="too (old|new)"):
        verify(PY_BODY, _standard(PY_ID, PY_TS, PY_SIG), PY_SECRET, now=PY_TS - offset)
    assert verify(PY_BODY, _standard(PY_ID, PY_TS, PY_SIG), PY_SECRET, now=PY_TS - offset, tolerance=400)


def test_during_a_rotation_either_secret_verifies() -> None:
    old, new = PY_SECRET, RS_SECRET
    both = f"{sign(PY_ID, PY_TS, PY_BODY, new)} {sign(PY_ID, PY_TS, PY_BODY, old)}"
    assert verify(PY_BODY, _standard(PY_ID, PY_TS, both), old, now=PY_TS)
    assert verify(PY_BODY, _standard(PY_ID, PY_TS, both), new, now=PY_TS)


@pytest.mark.parametrize(
    "headers",
    [
        _standard(PY_ID, PY_TS, PY_SIG.replace("g0h", "g0H")),  # wrong signature
        _standard(PY_ID + "x", PY_TS, PY_SIG),  # another message id
        _standard(PY_ID, PY_TS, "v1a," + PY_SIG[3:]),  # not a v1 signature
        {"webhook-id": PY_ID, "webhook-signature": PY_SIG},  # no timestamp
        {"webhook-id": PY_ID, "webhook-timestamp": "soon", "webhook-signature": PY_SIG},
        {},  # nothing signed
    ],
)
def test_tampered_or_incomplete_headers_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(WebhookVerificationError):
        verify(PY_BODY, headers, PY_SECRET, now=PY_TS)


def test_a_changed_body_is_refused() -> None:
    with pytest.raises(WebhookVerificationError):
        verify(PY_BODY.replace(b"2", b"3"), _standard(PY_ID, PY_TS, PY_SIG), PY_SECRET, now=PY_TS)
