# Copied verbatim from the webhook guide ("For Module Developers"); run by
# test_guide.py with stand-ins for the names the guide leaves undefined.
# Do not edit: the point is that the guide's code runs as written.

# --- 1. Import the EventBus
from dotmac.platform.webhooks.events import get_event_bus
from dotmac.platform.webhooks.models import WebhookEvent

# --- 2. Publish Events After State Changes
# Example: In billing/invoicing/service.py
async def create_invoice(
    self,
    tenant_id: str,
    customer_id: str,
    items: List[InvoiceItem],
    db: AsyncSession,
) -> Invoice:
    """Create an invoice and publish event."""

    # Create invoice
    invoice = Invoice(
        tenant_id=tenant_id,
        customer_id=customer_id,
        items=items,
        status=InvoiceStatus.DRAFT,
    )
    db.add(invoice)
    await db.commit()
    await db.refresh(invoice)

    # Publish event to webhook subscribers
    await get_event_bus().publish(
        event_type=WebhookEvent.INVOICE_CREATED.value,
        event_data={
            "invoice_id": str(invoice.id),
            "customer_id": customer_id,
            "amount": float(invoice.total_amount),
            "currency": invoice.currency,
            "status": invoice.status.value,
            "due_date": invoice.due_date.isoformat() if invoice.due_date else None,
        },
        tenant_id=tenant_id,
        db=db,  # Pass DB session for webhook delivery
    )

    return invoice
