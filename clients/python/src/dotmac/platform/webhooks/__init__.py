"""DotMac webhooks for platform modules and receivers.

* ``dotmac.platform.webhooks.events.get_event_bus().publish(...)``: publish
  an event (``events``); ``WebhookEvent`` names every catalog type (``models``).
* :func:`verify`: check a received webhook's signatures (``verify``).

Importing this package does nothing but define names; the bus connects on
its first publish.
"""

from .errors import (
    ConfigurationError,
    OutboxError,
    PublishError,
    PublishRejected,
    WebhookVerificationError,
)
from .models import WebhookEvent
from .verify import verify

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "OutboxError",
    "PublishError",
    "PublishRejected",
    "WebhookEvent",
    "WebhookVerificationError",
    "__version__",
    "verify",
]
