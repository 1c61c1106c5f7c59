"""Small stand-ins for what the guide's snippets take from the platform: an
``Invoice`` ORM model with items, and an email message, response and provider."""

from __future__ import annotations

import enum
import secrets
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, List

from sqlalchemy import ForeignKey, Numeric
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SNIPPETS = Path(__file__).parent / "guide_snippets"


class Base(DeclarativeBase):
    pass


class InvoiceStatus(enum.Enum):
    DRAFT = "draft"
    OPEN = "open"
    PAID = "paid"


class InvoiceItem(Base):
    __tablename__ = "invoice_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("invoices.id"))
    description: Mapped[str]
    quantity: Mapped[int]
    unit_price: Mapped[Decimal] = mapped_column(Numeric(12, 2))


class Invoice(Base):
    __tablename__ = "invoices"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[str]
    customer_id: Mapped[str]
    status: Mapped[InvoiceStatus]
    total_amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    currency: Mapped[str] = mapped_column(default="USD")
    due_date: Mapped[date | None]
    items: Mapped[List[InvoiceItem]] = relationship(cascade="all, delete-orphan")

    def __init__(self, *, items: list[InvoiceItem], **fields: Any) -> None:
        total = sum((item.unit_price * item.quantity for item in items), Decimal("0"))
        super().__init__(items=items, total_amount=total, **fields)


@dataclass
class EmailMessage:
    to: str
    subject: str
    body: str


@dataclass
class EmailResponse:
    id: str
    status: str


class StubProvider:
    """An email provider that 'sends' by answering ``sent``."""

    name = "stub-smtp"

    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []

    async def send(self, message: EmailMessage) -> EmailResponse:
        self.sent.append(message)
        return EmailResponse(id=f"msg_{secrets.token_hex(6)}", status="sent")


def run_snippet(file_name: str) -> dict[str, Any]:
    """Executes a guide snippet with the stand-ins in scope; returns its namespace."""
    namespace: dict[str, Any] = {
        "__name__": f"guide_{file_name.removesuffix('.py')}",
        "List": List,
        "AsyncSession": AsyncSession,
        "Invoice": Invoice,
        "InvoiceItem": InvoiceItem,
        "InvoiceStatus": InvoiceStatus,
        "EmailMessage": EmailMessage,
        "EmailResponse": EmailResponse,
        "datetime": datetime,
        "timezone": timezone,
    }
    path = SNIPPETS / file_name
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), namespace)  # noqa: S102 - the guide's code
    return namespace
