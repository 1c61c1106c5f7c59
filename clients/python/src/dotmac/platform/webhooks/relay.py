"""Runs the outbox relay as its own process::

    python -m dotmac.platform.webhooks.relay [--database-url URL] [--once]
    python -m dotmac.platform.webhooks.relay --print-sql   # the table's DDL

The database is the module's own (``--database-url``, else
``WEBHOOKS_OUTBOX_DATABASE_URL``, else ``DATABASE_URL``); the bus is
configured from the environment as for ``get_event_bus()``. ``--once``
publishes what is due and exits (cron, tests); otherwise it runs until
SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import signal
import sys

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from .events import get_event_bus
from .outbox import AnyEngine, OutboxRelay, OutboxStore, create_outbox_table, outbox_sql

log = logging.getLogger("dotmac.platform.webhooks")


def engine_from_url(url: str) -> AnyEngine:
    """An engine for a SQLAlchemy or libpq-style URL (``postgres://…`` picks
    whichever PostgreSQL driver is installed: psycopg, asyncpg or psycopg2)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        for module, driver in (("psycopg", "psycopg"), ("asyncpg", "asyncpg"), ("psycopg2", "psycopg2")):
            if importlib.util.find_spec(module) is not None:
                parsed = parsed.set(drivername=f"postgresql+{driver}")
                break
    if parsed.get_dialect().is_async:
        return create_async_engine(parsed, pool_size=2)
    return create_engine(parsed, pool_size=2)


async def _main(args: argparse.Namespace) -> int:
    engine = engine_from_url(args.database_url)
    bus = get_event_bus()
    try:
        if args.create_table:
            await create_outbox_table(engine)
        relay = OutboxRelay(OutboxStore(engine), bus.send, batch_size=args.batch_size, poll_interval=args.poll_interval)
        if args.once:
            sent = await relay.run_once()
            pending = await relay.store.pending()
            print(f"sent {sent} event(s); {pending} pending", flush=True)
            return 0 if pending == 0 else 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        log.info("webhook outbox relay started")
        await relay.run(stop)
        log.info("webhook outbox relay stopped")
        return 0
    finally:
        await bus.close()
        if hasattr(engine, "sync_engine"):
            await engine.dispose()  # type: ignore[misc]
        else:
            engine.dispose()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m dotmac.platform.webhooks.relay``."""
    parser = argparse.ArgumentParser(prog="python -m dotmac.platform.webhooks.relay", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("WEBHOOKS_OUTBOX_DATABASE_URL") or os.environ.get("DATABASE_URL"),
        help="the module's database (default: $WEBHOOKS_OUTBOX_DATABASE_URL, then $DATABASE_URL)",
    )
    parser.add_argument("--once", action="store_true", help="publish what is due, then exit (1 if rows remain)")
    parser.add_argument("--create-table", action="store_true", help="create webhook_outbox first if missing")
    parser.add_argument("--print-sql", action="store_true", help="print the table's DDL and exit")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--poll-interval", type=float, default=1.0, help="seconds between looks (default 1)")
    args = parser.parse_args(argv)
    if args.print_sql:
        sys.stdout.write(outbox_sql())
        return 0
    if not args.database_url:
        parser.error("no database: pass --database-url or set WEBHOOKS_OUTBOX_DATABASE_URL")
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
