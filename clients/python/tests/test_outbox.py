"""The outbox: which transaction a row joins, and that a module killed
between its commit and the relay still gets its event delivered."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Session

from dotmac.platform.webhooks.config import BusSettings
from dotmac.platform.webhooks.errors import OutboxError
from dotmac.platform.webhooks.events import EventBus, get_event_bus
from dotmac.platform.webhooks.models import WebhookEvent
from dotmac.platform.webhooks.outbox import OutboxStore

from .standins import Base, Invoice, InvoiceItem, InvoiceStatus
from .support import Receiver, System, database_url, eventually, python_env, which_python


async def _rows(engine: AsyncEngine) -> dict[str, dict]:
    async with engine.connect() as conn:
        result = await conn.execute(text("SELECT event_id, sent_at, attempts FROM webhook_outbox"))
        return {row["event_id"]: dict(row) for row in result.mappings()}


def _invoice(tenant: str) -> Invoice:
    return Invoice(
        tenant_id=tenant,
        customer_id="cust_1",
        items=[InvoiceItem(description="Plan", quantity=1, unit_price=Decimal("20.00"))],
        status=InvoiceStatus.OPEN,
    )


@pytest.mark.parametrize("relay", ["relay command", "next process's background relay"])
async def test_a_module_killed_between_commit_and_relay_still_gets_its_event_delivered(
    relay: str, bus_env: System, module_database: str, module_engine: AsyncEngine, receiver: Receiver, tenant: str
) -> None:
    system = bus_env
    async with module_engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    system.subscribe(system.tenant_key(tenant), receiver.url, ["invoice.created"])
    env = python_env({**system.bus_env(), "WEBHOOKS_OUTBOX_RELAY": "false"})
    module = subprocess.Popen(
        [which_python(), str(Path(__file__).parent / "module_process.py"), database_url(module_database, "asyncpg"), tenant],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(module.stdout.readline), 60)  # type: ignore[union-attr]
        event_id = line.decode().strip()
        assert event_id.startswith("evt_"), module.stderr.read().decode() if module.poll() is not None else line
    finally:
        module.send_signal(signal.SIGKILL)
        module.wait()

    # The invoice and its event committed together; nothing was sent.
    rows = await _rows(module_engine)
    assert rows[event_id]["sent_at"] is None
    assert receiver.for_event(event_id) == []

    if relay == "relay command":
        done = await asyncio.to_thread(
            subprocess.run,
            [which_python(), "-m", "dotmac.platform.webhooks.relay", "--once",
             "--database-url", database_url(module_database)],
            env=python_env(system.bus_env()),
            capture_output=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr.decode()
        assert b"sent 1 event(s); 0 pending" in done.stdout
    else:
        get_event_bus().start_relay(module_engine)
    delivered = await receiver.wait_for_event(event_id)
    assert delivered.json["data"]["currency"] == "USD"

    async def marked_sent() -> bool:
        return (await _rows(module_engine))[event_id]["sent_at"] is not None

    await eventually(marked_sent, 30, "the outbox row to be marked sent")


async def test_a_row_joins_a_transaction_with_work_and_leaves_only_after_its_commit(
    bus_env: System, module_engine: AsyncEngine, receiver: Receiver, tenant: str
) -> None:
    async with module_engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    bus_env.subscribe(bus_env.tenant_key(tenant), receiver.url, ["invoice.*"])
    sessions = async_sessionmaker(module_engine)

    # Rolled back: the invoice and its event vanish together.
    async with sessions() as db:
        db.add(_invoice(tenant))
        rolled_back = await get_event_bus().publish(WebhookEvent.INVOICE_CREATED, {"n": 1}, tenant, db=db)
        assert rolled_back not in await _rows(module_engine)  # not visible before the commit
        await db.rollback()

    # Committed: it goes out.
    async with sessions() as db:
        db.add(_invoice(tenant))
        await db.flush()  # written already; nothing pending in the session any more
        committed = await get_event_bus().publish(WebhookEvent.INVOICE_PAID, {"n": 2}, tenant, db=db)
        assert committed not in await _rows(module_engine)
        await db.commit()

    await receiver.wait_for_event(committed)
    rows = await _rows(module_engine)
    assert rolled_back not in rows
    assert receiver.for_event(rolled_back) == []


async def test_a_sync_session_publishes_through_the_outbox_too(
    bus_env: System, module_database: str, module_engine: AsyncEngine, receiver: Receiver, tenant: str
) -> None:
    bus_env.subscribe(bus_env.tenant_key(tenant), receiver.url, ["customer.created", "customer.updated"])
    engine = create_engine(database_url(module_database, "psycopg"))
    try:
        with Session(engine) as db:
            on_its_own = await get_event_bus().publish("customer.created", {"customer_id": "c1"}, tenant, db=db)
            assert on_its_own in await _rows(module_engine)  # nothing to commit: committed at once
            db.execute(text("CREATE TABLE IF NOT EXISTS customers (id text)"))
            db.execute(text("INSERT INTO customers VALUES ('c1')"))
            joined = await get_event_bus().publish("customer.updated", {"customer_id": "c1"}, tenant, db=db)
            assert joined not in await _rows(module_engine)
            db.commit()
        for event_id in (on_its_own, joined):
            await receiver.wait_for_event(event_id)
    finally:
        engine.dispose()


async def test_publishing_the_same_event_id_twice_delivers_once(
    bus_env: System, module_engine: AsyncEngine, receiver: Receiver, tenant: str
) -> None:
    key = bus_env.tenant_key(tenant)
    subscription = bus_env.subscribe(key, receiver.url, ["file.*"])
    bus = get_event_bus()
    event_id = "evt_file_42_uploaded"
    async with async_sessionmaker(module_engine)() as db:
        assert await bus.publish("file.uploaded", {"file_id": "f42"}, tenant, db=db, event_id=event_id) == event_id
        assert await bus.publish("file.uploaded", {"file_id": "f42"}, tenant, db=db, event_id=event_id) == event_id
    assert await bus.publish("file.uploaded", {"file_id": "f42"}, tenant, event_id=event_id) == event_id
    marker = await bus.publish("file.deleted", {"file_id": "f42"}, tenant)

    await receiver.wait_for_event(marker)
    await receiver.wait_for_event(event_id)

    async def relayed() -> bool:
        return (await _rows(module_engine))[event_id]["sent_at"] is not None

    await eventually(relayed, 30, "the outbox row to be sent")
    assert len(await _rows(module_engine)) == 1
    uploaded = [d for d in bus_env.deliveries(key, subscription["id"]) if d["event_type"] == "file.uploaded"]
    assert len(uploaded) == 1


async def test_the_outbox_refuses_a_database_other_than_postgresql(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'module.db'}")
    try:
        with pytest.raises(OutboxError, match="PostgreSQL"):
            OutboxStore(engine)
    finally:
        engine.dispose()


async def test_an_outbox_event_the_system_refuses_is_marked_failed_not_retried_forever(
    system: System, module_engine: AsyncEngine, tenant: str
) -> None:
    bus = EventBus(BusSettings(transport="http", api_url=system.api_url, publisher_key=system.publisher_key))
    try:
        async with async_sessionmaker(module_engine)() as db:
            refused = await bus.publish("invoice.teleported", {"invoice_id": "inv_9"}, tenant, db=db)

        async def failed() -> dict | None:
            async with module_engine.connect() as conn:
                row = (await conn.execute(
                    text("SELECT attempts, sent_at, last_error FROM webhook_outbox WHERE event_id = :id AND failed_at IS NOT NULL"),
                    {"id": refused},
                )).mappings().first()
                return dict(row) if row else None

        row = await eventually(failed, 30, "the refused row to be marked failed")
        assert row["sent_at"] is None
        assert row["attempts"] == 1
        assert "422" in row["last_error"]
    finally:
        await bus.close()
