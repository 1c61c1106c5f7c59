"""A webhook endpoint for trying the system out: verifies both signatures and
prints each delivery. Standard library only, plus `standardwebhooks` if
installed (pip install standardwebhooks).

    WEBHOOK_SECRET=whsec_... python3 examples/receiver.py 9000

Answers 204 when the signatures are valid, 401 when not; set RESPOND_STATUS
(e.g. 500 or 410) to watch retries or auto-disable.
"""

import hashlib
import hmac
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ["WEBHOOK_SECRET"]
RESPOND_STATUS = int(os.environ.get("RESPOND_STATUS", "204"))


def verify_webhook_signature(payload: bytes, signature: str, secret: str) -> bool:
    """X-Webhook-Signature: hex HMAC-SHA256 of the body, keyed by the secret's UTF-8 bytes."""
    expected_signature = hmac.new(secret.encode("utf-8"), payload, hashlib.sha256).hexdigest()
    return hmac.compare_digest(signature, expected_signature)


def verify_standard_webhooks(payload: bytes, headers) -> str:
    """webhook-id / webhook-timestamp / webhook-signature, per standardwebhooks.com."""
    try:
        from standardwebhooks.webhooks import Webhook, WebhookVerificationError
    except ImportError:
        return "skipped (pip install standardwebhooks)"
    try:
        Webhook(SECRET).verify(payload, dict(headers))
        return "valid"
    except WebhookVerificationError as err:
        return f"INVALID ({err})"


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        payload = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        legacy_ok = verify_webhook_signature(payload, self.headers.get("X-Webhook-Signature", ""), SECRET)
        standard = verify_standard_webhooks(payload, self.headers)
        event = json.loads(payload)
        print(
            f"{event['type']} {event['id']} attempt={self.headers.get('X-Webhook-Attempt')} "
            f"delivery={self.headers.get('X-Webhook-Delivery-Id')} "
            f"X-Webhook-Signature={'valid' if legacy_ok else 'INVALID'} webhook-signature={standard}",
            flush=True,
        )
        ok = legacy_ok and not standard.startswith("INVALID")
        self.send_response(RESPOND_STATUS if ok else 401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    print(f"listening on http://127.0.0.1:{port}/", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
