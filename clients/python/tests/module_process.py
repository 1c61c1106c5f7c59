"""A platform module process for the crash test: creates an invoice and
publishes its event through the outbox in ONE transaction, commits, prints
the event id, then hangs until killed. Run with WEBHOOKS_OUTBOX_RELAY=false so
nothing in this process relays the row before the kill.

    python module_process.py <sqlalchemy-url> <tenant_id>
"""

from __future__ import annotations

import asyncio
import sys
from decimal import Decimal

from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from dotmac.platform.webhooks.events import get_event_bus
from dotmac.platform.webhooks.models import WebhookEvent

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from standins import Invoice, InvoiceItem, InvoiceStatus  # noqa: E402


async def main(url: str, tenant_id: str) -> None:
    engine = create_async_engine(url)
    async with async_sessionmaker(engine)() as db:
        async with db.begin():
            invoice = Invoice(
                tenant_id=tenant_id,
                customer_id="cust_crash",
                items=[InvoiceItem(description="Setup", quantity=1, unit_price=Decimal("10.00"))],
                status=InvoiceStatus.OPEN,
            )
            db.add(invoice)
            await db.flush()
            event_id = await get_event_bus().publish(
                event_type=WebhookEvent.INVOICE_CREATED.value,
                event_data={"invoice_id": str(invoice.id), "amount": 10.0, "currency": "USD"},
                tenant_id=tenant_id,
                db=db,
            )
        # Committed: the invoice and its outbox row together.
    print(event_id, flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
