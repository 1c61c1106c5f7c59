"""Publishes one event over AMQP, as a platform module would.

    python3 -m venv .venv && .venv/bin/pip install -r examples/requirements.txt
    AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f .venv/bin/python examples/publish_amqp.py dev

The body is the same JSON as POST /api/v1/events. Ingest acks it once the
event and its deliveries are stored; a message it cannot accept goes to
`{AMQP_PREFIX}.events.rejected` with the reason in `x-rejection-reason`.
"""

import json
import os
import sys
import uuid

import pika

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
PREFIX = os.environ.get("AMQP_PREFIX", "webhooks")
tenant_id = sys.argv[1] if len(sys.argv) > 1 else "dev"

event = {
    "event_type": "invoice.created",
    "event_id": f"evt_{uuid.uuid4().hex}",  # optional: your idempotency key
    "tenant_id": tenant_id,
    "event_data": {"invoice_id": "inv_123", "amount": 100.0, "currency": "USD"},
    "metadata": {"source": "billing"},
}

connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
channel = connection.channel()
channel.confirm_delivery()  # basic_publish raises if the broker does not take it
channel.basic_publish(
    exchange=f"{PREFIX}.events",  # durable topic exchange, declared by ingest
    routing_key=event["event_type"],
    body=json.dumps(event).encode(),
    # Persistent; message_id = the event id, so a broker redelivery is stored once.
    properties=pika.BasicProperties(content_type="application/json", delivery_mode=2, message_id=event["event_id"]),
    mandatory=True,
)
connection.close()
print(f"published {event['event_id']}")
