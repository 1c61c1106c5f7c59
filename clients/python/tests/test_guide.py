"""The guide's two module snippets, run verbatim against the real system:
their events reach a subscribed receiver with valid signatures."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from dotmac.platform.webhooks.verify import verify

from .standins import Base, EmailMessage, InvoiceItem, InvoiceStatus, StubProvider, run_snippet
from .support import Receiver, System, eventually


async def _outbox_row(engine: AsyncEngine, event_type: str) -> dict:
    async with engine.connect() as conn:
        row = (await conn.execute(
            text("SELECT event_id, tenant_id, sent_at FROM webhook_outbox WHERE event_type = :t"), {"t": event_type}
        )).mappings().one()
        return dict(row)


async def test_the_guides_create_invoice_snippet_reaches_a_subscribed_receiver(
    bus_env: System, module_engine: AsyncEngine, receiver: Receiver, tenant: str
) -> None:
    async with module_engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    key = bus_env.tenant_key(tenant)
    subscription = bus_env.subscribe(key, receiver.url, ["invoice.*"])
    service = SimpleNamespace()
    create_invoice = run_snippet("billing_service.py")["create_invoice"]

    async with async_sessionmaker(module_engine)() as db:
        invoice = await create_invoice(
            service,
            tenant_id=tenant,
            customer_id="cust_456",
            items=[
                InvoiceItem(description="Fibre 1G", quantity=1, unit_price=Decimal("49.90")),
                InvoiceItem(description="Router", quantity=2, unit_price=Decimal("25.05")),
            ],
            db=db,
        )
        invoice_id = str(invoice.id)  # still loaded: publishing left the session alone

    row = await _outbox_row(module_engine, "invoice.created")
    delivered = await receiver.wait_for_event(row["event_id"])
    body = verify(delivered.body, delivered.headers, subscription["secret"])
    assert body["type"] == "invoice.created"
    assert body["tenant_id"] == tenant
    assert body["data"] == {
        "invoice_id": invoice_id,
        "customer_id": "cust_456",
        "amount": 100.0,
        "currency": "USD",
        "status": InvoiceStatus.DRAFT.value,
        "due_date": None,
    }
    # The relay marks the row sent once the broker confirmed it.
    async def sent() -> bool:
        return (await _outbox_row(module_engine, "invoice.created"))["sent_at"] is not None

    await eventually(sent, 30, "the outbox row to be marked sent")


async def test_the_guides_send_email_snippet_reaches_a_subscribed_receiver(
    bus_env: System, module_engine: AsyncEngine, receiver: Receiver, tenant: str
) -> None:
    key = bus_env.tenant_key(tenant)
    subscription = bus_env.subscribe(key, receiver.url, ["email.sent"])
    send_email = run_snippet("email_service.py")["send_email"]

    async with async_sessionmaker(module_engine)() as db:
        service = SimpleNamespace(_provider=StubProvider(), tenant_id=tenant, db=db)
        message = EmailMessage(to="ada@example.com", subject="Your invoice", body="…")
        response = await send_email(service, message)
        assert response.status == "sent"

    row = await _outbox_row(module_engine, "email.sent")
    assert row["tenant_id"] == tenant
    delivered = await receiver.wait_for_event(row["event_id"])
    body = verify(delivered.body, delivered.headers, subscription["secret"])
    assert body["type"] == "email.sent"
    assert body["data"]["message_id"] == response.id
    assert body["data"]["to"] == "ada@example.com"
    assert body["data"]["subject"] == "Your invoice"
    assert body["data"]["provider"] == "stub-smtp"
