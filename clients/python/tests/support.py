"""The running system the tests publish into: webhooks-ingest and
webhooks-dispatcher on free ports with their own database and AMQP prefix,
API keys made with the CLI, and a real HTTP receiver that records and
verifies what it gets."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg

REPO_ROOT = Path(__file__).resolve().parents[3]
PG_ADMIN_URL = os.environ.get("WEBHOOKS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
RETRY_SCHEDULE = "1s"


def bin_dir() -> Path:
    """Where the test script built the services (debug profile)."""
    explicit = os.environ.get("WEBHOOKS_BIN_DIR")
    if explicit:
        return Path(explicit)
    target = os.environ.get("CARGO_TARGET_DIR") or str(Path.home() / ".cache/webhooks-target")
    return Path(target) / "debug"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Polls ``condition`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def create_database(prefix: str) -> str:
    """Creates a fresh database; returns its name."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_url(name: str, driver: str = "") -> str:
    scheme = f"postgresql+{driver}" if driver else "postgres"
    return f"{scheme}://postgres@127.0.0.1:5432/{name}"


@dataclass
class Received:
    """One request the receiver got."""

    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real webhook endpoint on 127.0.0.1 that records every request and answers 204."""

    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/webhook"

    def for_event(self, event_id: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.headers.get("x-webhook-event-id") == event_id]

    async def wait_for_event(self, event_id: str, timeout: float = 30.0) -> Received:
        """Waits (without blocking the event loop) until the event arrives."""

        async def arrived() -> list[Received]:
            return self.for_event(event_id)

        return (await eventually(arrived, timeout, f"event {event_id} at the receiver"))[0]


def start_receiver() -> Receiver:
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with receiver.lock:
                receiver.requests.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = Receiver(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver


@dataclass
class System:
    """webhooks-ingest and webhooks-dispatcher, running for the test session."""

    env: dict[str, str]
    api_url: str
    amqp_prefix: str
    database: str
    publisher_key: str
    processes: list[subprocess.Popen[bytes]]
    log_dir: Path

    def cli(self, *args: str) -> str:
        """Runs ``webhooks-ingest <args>``; returns the last line of stdout."""
        done = subprocess.run(
            [str(bin_dir() / "webhooks-ingest"), *args], env=self.env, capture_output=True, timeout=120, check=False
        )
        assert done.returncode == 0, f"webhooks-ingest {' '.join(args)} failed: {done.stderr.decode()}"
        return done.stdout.decode().strip().splitlines()[-1]

    def tenant_key(self, tenant: str) -> str:
        return self.cli("api-key", "create", "--tenant", tenant)

    def subscribe(self, tenant_key: str, url: str, events: list[str]) -> dict[str, Any]:
        response = httpx.post(
            f"{self.api_url}/webhooks/subscriptions",
            headers={"Authorization": f"Bearer {tenant_key}"},
            json={"url": url, "events": events},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        return response.json()

    def deliveries(self, tenant_key: str, subscription_id: str) -> list[dict[str, Any]]:
        response = httpx.get(
            f"{self.api_url}/webhooks/subscriptions/{subscription_id}/deliveries",
            headers={"Authorization": f"Bearer {tenant_key}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return list(response.json()["items"])

    def bus_env(self) -> dict[str, str]:
        """The environment a module's bus reads to reach this system over AMQP."""
        return {"WEBHOOKS_AMQP_URL": AMQP_URL, "AMQP_PREFIX": self.amqp_prefix}

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{url}: the process exited ({process.returncode}):\n{log.read_text()[-4000:]}")
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, 90, f"{url} to answer 200", interval=0.1)


def start_system(log_dir: Path) -> System:
    binaries = bin_dir()
    for name in ("webhooks-ingest", "webhooks-dispatcher"):
        if not (binaries / name).exists():
            raise AssertionError(f"{binaries / name} is missing: build it first (scripts/test.sh does)")
    database = create_database("pyclient")
    prefix = f"pyclient_{secrets.token_hex(6)}"
    ingest_port, dispatcher_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("WEBHOOKS_", "AMQP_"))},
        "DATABASE_URL": database_url(database),
        "AMQP_URL": AMQP_URL,
        "AMQP_PREFIX": prefix,
        "INGEST_BIND": f"127.0.0.1:{ingest_port}",
        "DISPATCHER_BIND": f"127.0.0.1:{dispatcher_port}",
        "WEBHOOK_SECRET_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "RETRY_SCHEDULE": RETRY_SCHEDULE,
        "ALLOW_HTTP_TARGETS": "true",
        "ALLOW_PRIVATE_TARGETS": "true",
        "RUST_LOG": os.environ.get("RUST_LOG", "warn"),
    }
    processes: list[subprocess.Popen[bytes]] = []
    system = System(env, f"http://127.0.0.1:{ingest_port}/api/v1", prefix, database, "", processes, log_dir)
    try:
        system.cli("migrate")
        for name, health in (
            ("webhooks-ingest", f"http://127.0.0.1:{ingest_port}/readyz"),
            ("webhooks-dispatcher", f"http://127.0.0.1:{dispatcher_port}/readyz"),
        ):
            log = log_dir / f"{name}.log"
            with log.open("wb") as out:
                processes.append(subprocess.Popen([str(binaries / name)], env=env, stdout=out, stderr=subprocess.STDOUT))
            _wait_ready(health, processes[-1], log)
        system.publisher_key = system.cli("api-key", "create", "--publisher", "--name", "pytest")
    except BaseException:
        system.stop()
        drop_database(database)
        raise
    return system


def delete_topology(prefix: str) -> None:
    """Deletes the exchanges and queues the services declared under our prefix."""
    import asyncio

    import aio_pika

    queues = [f"{prefix}.events.ingest", f"{prefix}.events.rejected", f"{prefix}.dispatch"]
    queues += [f"{prefix}.dispatch.retry.1000ms", f"{prefix}.dispatch.defer.1000ms", f"{prefix}.dispatch.defer.10000ms"]

    async def delete() -> None:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            for queue in queues:
                channel = await connection.channel()
                try:
                    await channel.queue_delete(queue)
                except aio_pika.exceptions.AMQPError:
                    pass
            for exchange in (f"{prefix}.events", f"{prefix}.dispatch"):
                channel = await connection.channel()
                try:
                    await channel.exchange_delete(exchange)
                except aio_pika.exceptions.AMQPError:
                    pass

    asyncio.run(delete())


def python_env(extra: dict[str, str]) -> dict[str, str]:
    """An environment for a child Python process: ours, minus bus settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WEBHOOKS_", "AMQP_"))}
    env.update(extra)
    return env


def which_python() -> str:
    import sys

    return sys.executable or shutil.which("python3") or "python3"


async def eventually(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Awaits ``condition()`` (a coroutine function) until it returns something truthy."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
