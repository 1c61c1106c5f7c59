"""``WebhookEvent`` is the catalog, exactly: every publishable type in the
migrations (including ones added by later migrations), and nothing else."""

from __future__ import annotations

import re

import httpx

from dotmac.platform.webhooks.models import WebhookEvent

from .support import REPO_ROOT, System

_INSERT = re.compile(r"INSERT\s+INTO\s+event_types\b(.*?);", re.I | re.S)
_ROW = re.compile(r"\(\s*'((?:[^']|'')*)'\s*,\s*'((?:[^']|'')*)'")
_DELETE = re.compile(r"DELETE\s+FROM\s+event_types\b(.*?);", re.I | re.S)
_QUOTED = re.compile(r"'((?:[^']|'')*)'")


def catalog_from_migrations() -> dict[str, str]:
    """event type → category, replaying every migration's up.sql in order."""
    migrations = sorted((REPO_ROOT / "migrations").glob("*/up.sql"))
    assert migrations, "no migrations found"
    catalog: dict[str, str] = {}
    for path in migrations:
        sql = re.sub(r"--[^\n]*", "", path.read_text(encoding="utf-8"))
        for statement in _DELETE.findall(sql):
            for name in _QUOTED.findall(statement):
                catalog.pop(name, None)
        for statement in _INSERT.findall(sql):
            for event_type, category in _ROW.findall(statement):
                catalog[event_type] = category
    return catalog


def publishable(catalog: dict[str, str]) -> set[str]:
    # webhook.* types (webhook.test, webhook.subscription.disabled, …) are
    # emitted by the platform itself; publishing one is 422, so they are
    # deliberately not in the publisher enum.
    return {name for name in catalog if not name.startswith("webhook.")}


def test_the_enum_holds_every_publishable_catalog_type_and_nothing_else() -> None:
    catalog = catalog_from_migrations()
    assert "invoice.created" in catalog and "webhook.test" in catalog  # the parser found the catalog
    assert {e.value for e in WebhookEvent} == publishable(catalog)


def test_operational_webhook_types_are_not_in_the_publisher_enum() -> None:
    operational = {name for name in catalog_from_migrations() if name.startswith("webhook.")}
    assert operational, "the catalog has webhook.* types"
    assert not operational & {e.value for e in WebhookEvent}


def test_enum_names_are_the_upper_snake_case_of_their_values() -> None:
    for event in WebhookEvent:
        assert event.name == event.value.upper().replace(".", "_")
        assert str(event) == event.value


def test_the_enum_matches_the_running_catalog(system: System, tenant: str) -> None:
    response = httpx.get(
        f"{system.api_url}/webhooks/events",
        headers={"Authorization": f"Bearer {system.tenant_key(tenant)}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    served = {item["type"] for item in response.json()["items"]}
    assert {e.value for e in WebhookEvent} == {t for t in served if not t.startswith("webhook.")}
