"""Fixtures: one running system per test session (its own database and AMQP
prefix), a receiver and a module database per test, and a fresh
process-wide event bus per test pointed at the system."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from dotmac.platform.webhooks.events import get_event_bus, set_event_bus
from dotmac.platform.webhooks.outbox import create_outbox_table

from .support import (
    Receiver,
    System,
    create_database,
    database_url,
    delete_topology,
    drop_database,
    start_receiver,
    start_system,
)


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = start_system(Path(tmp_path_factory.mktemp("services")))
    try:
        yield running
    finally:
        running.stop()
        drop_database(running.database)
        delete_topology(running.amqp_prefix)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = start_receiver()
    try:
        yield running
    finally:
        running.server.shutdown()
        running.server.server_close()


@pytest.fixture
def tenant() -> str:
    return f"tenant_{secrets.token_hex(4)}"


@pytest.fixture
def module_database() -> Iterator[str]:
    """A platform module's own database (empty), dropped afterwards."""
    name = create_database("pymodule")
    try:
        yield name
    finally:
        drop_database(name)


@pytest.fixture
async def module_engine(module_database: str) -> AsyncIterator[AsyncEngine]:
    """An async engine on the module's database, with the outbox table."""
    engine = create_async_engine(database_url(module_database, "asyncpg"))
    await create_outbox_table(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def bus_env(system: System, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[System]:
    """Points the process-wide bus at the system over AMQP, and closes it after the test."""
    for name, value in system.bus_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WEBHOOKS_API_URL", raising=False)
    monkeypatch.delenv("WEBHOOKS_OUTBOX_RELAY", raising=False)
    set_event_bus(None)
    try:
        yield system
    finally:
        await get_event_bus().close()
        set_event_bus(None)
