"""A webhook endpoint for trying the system out: verifies both signatures and
prints each delivery. Standard library, plus `standardwebhooks` for the
`webhook-signature` check. From the repository root:

    python3 -m venv .venv && .venv/bin/pip install -r examples/requirements.txt
    WEBHOOK_SECRET=whsec_... .venv/bin/python examples/receiver.py 9000

Answers 204 when the signatures are valid, 401 when not; set RESPOND_STATUS
(e.g. 500 or 410) to watch retries or auto-disable. A second argument sets the
listen address (default 127.0.0.1; 0.0.0.0 lets containers reach it, e.g. a
dispatcher under docker compose at http://host.docker.internal:9000/).
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


try:
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError
except ImportError:
    Webhook = None


def verify_standard_webhooks(payload: bytes, headers) -> str:
    """webhook-id / webhook-timestamp / webhook-signature, per standardwebhooks.com."""
    if Webhook is None:
        return "skipped (pip install -r examples/requirements.txt)"
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
    host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
    if Webhook is None:
        print(
            "warning: the standardwebhooks package is missing, so webhook-signature is not checked;\n"
            "         run: python3 -m venv .venv && .venv/bin/pip install -r examples/requirements.txt\n"
            "         then start this with .venv/bin/python",
            file=sys.stderr,
            flush=True,
        )
    print(f"listening on http://{host}:{port}/", flush=True)
    ThreadingHTTPServer((host, port), Handler).serve_forever()
