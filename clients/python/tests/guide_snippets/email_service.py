# Copied verbatim from the webhook guide ("For Module Developers"); run by
# test_guide.py with stand-ins for the names the guide leaves undefined.
# Do not edit: the point is that the guide's code runs as written.

# --- 4. Example: Communications Module
# In communications/email_service.py
from dotmac.platform.webhooks.events import get_event_bus
from dotmac.platform.webhooks.models import WebhookEvent

async def send_email(self, message: EmailMessage) -> EmailResponse:
    """Send email and publish event."""

    # Send via provider
    response = await self._provider.send(message)

    # Publish event
    if response.status == "sent":
        await get_event_bus().publish(
            event_type=WebhookEvent.EMAIL_SENT.value,
            event_data={
                "message_id": response.id,
                "to": message.to,
                "subject": message.subject,
                "provider": self._provider.name,
                "sent_at": datetime.now(timezone.utc).isoformat(),
            },
            tenant_id=self.tenant_id,
            db=self.db,
        )

    return response
