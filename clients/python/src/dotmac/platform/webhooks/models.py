"""The event types a platform module may publish: the webhook catalog.

A test checks this enum against the catalog migrations, so the two cannot
drift. Operational ``webhook.*`` types (``webhook.test`` and the ones the
platform emits about subscriptions and deliveries) are deliberately absent:
only the platform itself sends them, and publishing one is rejected (422).
"""

from __future__ import annotations

from enum import Enum

__all__ = ["WebhookEvent"]


class WebhookEvent(str, Enum):
    """A catalog event type; ``.value`` is the wire name (``"invoice.created"``)."""

    # Billing
    INVOICE_CREATED = "invoice.created"
    INVOICE_PAID = "invoice.paid"
    INVOICE_PAYMENT_FAILED = "invoice.payment_failed"
    INVOICE_VOIDED = "invoice.voided"
    PAYMENT_SUCCEEDED = "payment.succeeded"
    PAYMENT_FAILED = "payment.failed"
    PAYMENT_REFUNDED = "payment.refunded"
    SUBSCRIPTION_CREATED = "subscription.created"
    SUBSCRIPTION_UPDATED = "subscription.updated"
    SUBSCRIPTION_CANCELLED = "subscription.cancelled"
    SUBSCRIPTION_RENEWED = "subscription.renewed"
    # Customer
    CUSTOMER_CREATED = "customer.created"
    CUSTOMER_UPDATED = "customer.updated"
    CUSTOMER_DELETED = "customer.deleted"
    # User
    USER_REGISTERED = "user.registered"
    USER_UPDATED = "user.updated"
    USER_DELETED = "user.deleted"
    # Communication
    EMAIL_SENT = "email.sent"
    EMAIL_DELIVERED = "email.delivered"
    EMAIL_BOUNCED = "email.bounced"
    EMAIL_FAILED = "email.failed"
    BULK_EMAIL_COMPLETED = "bulk_email.completed"
    # File storage
    FILE_UPLOADED = "file.uploaded"
    FILE_DELETED = "file.deleted"
    FILE_SCAN_COMPLETED = "file.scan_completed"
    STORAGE_QUOTA_EXCEEDED = "storage.quota_exceeded"
    # Data transfer
    IMPORT_COMPLETED = "import.completed"
    IMPORT_FAILED = "import.failed"
    EXPORT_COMPLETED = "export.completed"
    EXPORT_FAILED = "export.failed"

    def __str__(self) -> str:
        return self.value
