"""The transactional outbox: ``publish(..., db=session)`` writes the event to
the ``webhook_outbox`` table of the module's own database, and
:class:`OutboxRelay` publishes committed rows and marks them sent.

Which transaction the row joins:

* the session's, when that transaction has work of its own (objects pending
  in the session, or rows it has already written): the event then exists if
  and only if the caller commits;
* its own, committed at once on a separate connection, when the session has
  nothing to commit, which is the case in the guide's example that commits
  before publishing. The caller's session is left untouched.

Either way the row is durable before the event leaves, so a module killed
after its commit loses nothing: a relay (the background task of the next
process, or ``python -m dotmac.platform.webhooks.relay``) sends it later.
Rows are leased while being published, so several relays may run at once;
a relay that dies mid-publish leaves the lease to expire and another sends
the row again with the same ``event_id`` (ingest drops the duplicate).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Union

from sqlalchemy import BigInteger, Engine, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from .errors import OutboxError, PublishRejected

__all__ = [
    "OutboxRelay",
    "OutboxRow",
    "OutboxStore",
    "create_outbox_table",
    "outbox_sql",
    "stage",
]

log = logging.getLogger("dotmac.platform.webhooks")

#: A SQLAlchemy engine of the module's database, sync or async.
AnyEngine = Union[Engine, AsyncEngine]

_INSERT = text(
    "INSERT INTO webhook_outbox (event_id, tenant_id, event_type, body) "
    "VALUES (:event_id, :tenant_id, :event_type, :body) "
    "ON CONFLICT (tenant_id, event_id) DO NOTHING"
)
# Takes due rows and leases them (pushes next_attempt_at past the publish)
# in one statement; SKIP LOCKED lets relays share the table.
_CLAIM = text(
    "UPDATE webhook_outbox AS o "
    "SET attempts = o.attempts + 1, next_attempt_at = now() + make_interval(secs => :lease) "
    "WHERE o.id IN (SELECT id FROM webhook_outbox "
    "  WHERE sent_at IS NULL AND failed_at IS NULL AND next_attempt_at <= now() "
    "  ORDER BY next_attempt_at, id LIMIT :limit FOR UPDATE SKIP LOCKED) "
    "RETURNING o.id, o.event_id, o.event_type, o.body, o.attempts"
)
_MARK_SENT = text("UPDATE webhook_outbox SET sent_at = now(), last_error = NULL WHERE id = ANY(:ids)").bindparams(
    bindparam("ids", type_=ARRAY(BigInteger))
)
_MARK_RETRY = text(
    "UPDATE webhook_outbox SET last_error = :error, next_attempt_at = now() + make_interval(secs => :delay) "
    "WHERE id = :id"
)
_MARK_FAILED = text("UPDATE webhook_outbox SET failed_at = now(), last_error = :error WHERE id = :id")
_PURGE = text("DELETE FROM webhook_outbox WHERE sent_at < now() - make_interval(secs => :age)")
_PENDING = text("SELECT count(*) FROM webhook_outbox WHERE sent_at IS NULL AND failed_at IS NULL")
_HAS_WRITES = text("SELECT txid_current_if_assigned() IS NOT NULL")


def outbox_sql() -> str:
    """The DDL of ``webhook_outbox`` (idempotent), for an Alembic migration."""
    return resources.files(__package__).joinpath("outbox.sql").read_text(encoding="utf-8")


def _statements() -> list[str]:
    lines = [line for line in outbox_sql().splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


async def create_outbox_table(bind: AnyEngine | Connection | AsyncConnection) -> None:
    """Creates ``webhook_outbox`` and its index if missing (sync or async bind)."""
    statements = _statements()
    if isinstance(bind, AsyncEngine):
        async with bind.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    elif isinstance(bind, AsyncConnection):
        for statement in statements:
            await bind.execute(text(statement))
    elif isinstance(bind, Engine):
        await asyncio.to_thread(_create_sync, bind, statements)
    else:
        for statement in statements:
            bind.execute(text(statement))


def _create_sync(engine: Engine, statements: list[str]) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


@dataclass(frozen=True)
class OutboxRow:
    """An event to write to the outbox."""

    event_id: str
    tenant_id: str
    event_type: str
    body: str


def session_engine(db: AsyncSession | Session) -> Engine:
    """The (sync) engine behind a session, whether bound to an engine or a connection."""
    session = db.sync_session if isinstance(db, AsyncSession) else db
    bind = session.get_bind()
    engine = bind.engine if isinstance(bind, Connection) else bind
    if not isinstance(engine, Engine):
        raise OutboxError(f"cannot find the engine of this session (bound to {bind!r})")
    if engine.dialect.name != "postgresql":
        raise OutboxError(f"the webhook outbox needs PostgreSQL, not {engine.dialect.name}")
    return engine


async def stage(db: AsyncSession | Session, row: OutboxRow, on_commit: Callable[..., None]) -> bool:
    """Writes ``row`` to the outbox (see the module's doc for which
    transaction it joins); returns True when it joined the session's
    transaction, in which case ``on_commit`` runs after that commit."""
    engine = session_engine(db)
    params = row.__dict__
    if isinstance(db, AsyncSession):
        if db.new or db.dirty or db.deleted or (db.in_transaction() and (await db.execute(_HAS_WRITES)).scalar()):
            await db.execute(_INSERT, params)
            _listen_commit(db.sync_session, on_commit)
            return True
        async with AsyncEngine(engine).begin() as conn:
            await conn.execute(_INSERT, params)
        return False
    if isinstance(db, Session):
        if db.new or db.dirty or db.deleted or (db.in_transaction() and db.execute(_HAS_WRITES).scalar()):
            db.execute(_INSERT, params)
            _listen_commit(db, on_commit)
            return True
        with engine.begin() as conn:
            conn.execute(_INSERT, params)
        return False
    raise TypeError(f"db must be a SQLAlchemy AsyncSession or Session, not {type(db).__name__}")


def _listen_commit(session: Session, on_commit: Callable[..., None]) -> None:
    from sqlalchemy import event

    if not event.contains(session, "after_commit", on_commit):
        event.listen(session, "after_commit", on_commit)


@dataclass(frozen=True)
class ClaimedRow:
    """A leased outbox row, ready to publish."""

    id: int
    event_id: str
    event_type: str
    body: str
    attempts: int


class OutboxStore:
    """The relay's queries against ``webhook_outbox``, on a sync engine (run
    in a worker thread) or an async one. Each is one short transaction."""

    def __init__(self, engine: AnyEngine) -> None:
        if engine.dialect.name != "postgresql":
            raise OutboxError(f"the webhook outbox needs PostgreSQL, not {engine.dialect.name}")
        self.engine = engine

    async def _run(self, statement: Any, params: dict[str, Any], fetch: bool = False) -> Sequence[Any]:
        if isinstance(self.engine, AsyncEngine):
            async with self.engine.begin() as conn:
                result = await conn.execute(statement, params)
                return result.all() if fetch else ()
        return await asyncio.to_thread(self._run_sync, statement, params, fetch)

    def _run_sync(self, statement: Any, params: dict[str, Any], fetch: bool) -> Sequence[Any]:
        assert isinstance(self.engine, Engine)
        with self.engine.begin() as conn:
            result = conn.execute(statement, params)
            return result.all() if fetch else ()

    async def claim(self, limit: int, lease_seconds: float) -> list[ClaimedRow]:
        """Leases up to ``limit`` due rows, oldest first."""
        rows = await self._run(_CLAIM, {"limit": limit, "lease": float(lease_seconds)}, fetch=True)
        return sorted((ClaimedRow(*row) for row in rows), key=lambda r: r.id)

    async def mark_sent(self, ids: list[int]) -> None:
        if ids:
            await self._run(_MARK_SENT, {"ids": ids})

    async def mark_retry(self, row_id: int, error: str, delay_seconds: float) -> None:
        await self._run(_MARK_RETRY, {"id": row_id, "error": error[:2000], "delay": float(delay_seconds)})

    async def mark_failed(self, row_id: int, error: str) -> None:
        await self._run(_MARK_FAILED, {"id": row_id, "error": error[:2000]})

    async def purge(self, older_than_seconds: float) -> None:
        """Deletes rows sent more than ``older_than_seconds`` ago."""
        await self._run(_PURGE, {"age": float(older_than_seconds)})

    async def pending(self) -> int:
        """How many rows are not yet sent (nor failed for good)."""
        rows = await self._run(_PENDING, {}, fetch=True)
        return int(rows[0][0])


#: Sends one encoded event: (event_type, event_id, body) → durable, or raises.
Sender = Callable[[str, str, bytes], Awaitable[None]]


class OutboxRelay:
    """Publishes committed outbox rows and marks them sent.

    :meth:`run` loops until stopped: it drains due rows, then sleeps until
    :meth:`wake` (called after a commit that staged rows) or ``poll_interval``.
    A failed publish is retried with capped exponential backoff; an event the
    webhook system refuses for good gets ``failed_at`` and ``last_error``.
    """

    def __init__(
        self,
        store: OutboxStore,
        send: Sender,
        *,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        lease_seconds: float = 60.0,
        retention_seconds: float = 7 * 24 * 3600.0,
        max_backoff: float = 60.0,
    ) -> None:
        self.store = store
        self._send = send
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._lease = lease_seconds
        self._retention = retention_seconds
        self._max_backoff = max_backoff
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # A stable callable, so a session gets one listener however often it publishes.
        self.on_commit: Callable[..., None] = lambda *_: self.wake()

    def wake(self) -> None:
        """Asks the running relay to look for rows now (thread-safe)."""
        loop, wakeup = self._loop, self._wakeup
        if loop is None or wakeup is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wakeup.set()
        else:
            loop.call_soon_threadsafe(wakeup.set)

    async def run_once(self) -> int:
        """Publishes every row due now; returns how many were sent."""
        sent_total = 0
        while True:
            rows = await self.store.claim(self._batch_size, self._lease)
            if not rows:
                return sent_total
            sends = (self._send(row.event_type, row.event_id, row.body.encode()) for row in rows)
            results = await asyncio.gather(*sends, return_exceptions=True)
            sent = [row.id for row, result in zip(rows, results) if result is None]
            await self.store.mark_sent(sent)
            sent_total += len(sent)
            for row, result in zip(rows, results):
                if isinstance(result, PublishRejected):
                    log.error("webhook event refused for good event_id=%s error=%s", row.event_id, result)
                    await self.store.mark_failed(row.id, str(result))
                elif isinstance(result, BaseException):
                    if not isinstance(result, Exception):
                        raise result
                    delay = min(self._max_backoff, 2.0 ** min(row.attempts, 16))
                    log.warning(
                        "webhook event publish failed event_id=%s attempt=%s retry_in_s=%s error=%s",
                        row.event_id, row.attempts, delay, result,
                    )
                    await self.store.mark_retry(row.id, str(result) or type(result).__name__, delay)
            if len(rows) < self._batch_size:
                return sent_total

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Relays until ``stop`` is set (or the task is cancelled)."""
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        next_purge = 0.0
        while stop is None or not stop.is_set():
            self._wakeup.clear()
            try:
                await self.run_once()
                if self._loop.time() >= next_purge:
                    await self.store.purge(self._retention)
                    next_purge = self._loop.time() + 3600
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the database may be away; keep going
                log.warning("webhook outbox relay pass failed; retrying", exc_info=True)
            waiters = [asyncio.ensure_future(self._wakeup.wait())]
            if stop is not None:
                waiters.append(asyncio.ensure_future(stop.wait()))
            try:
                await asyncio.wait(waiters, timeout=self._poll_interval, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
