//! The event types a module may publish: the webhook catalog, one constant
//! per type. A test checks them against the catalog migrations. Operational
//! `webhook.*` types are absent on purpose: only the platform sends them, and
//! publishing one is refused (422 over HTTP, dead-lettered over AMQP).

// Billing
/// `invoice.created`: Invoice created.
pub const INVOICE_CREATED: &str = "invoice.created";
/// `invoice.paid`: Invoice paid.
pub const INVOICE_PAID: &str = "invoice.paid";
/// `invoice.payment_failed`: Invoice payment failed.
pub const INVOICE_PAYMENT_FAILED: &str = "invoice.payment_failed";
/// `invoice.voided`: Invoice voided.
pub const INVOICE_VOIDED: &str = "invoice.voided";
/// `payment.succeeded`: Payment succeeded.
pub const PAYMENT_SUCCEEDED: &str = "payment.succeeded";
/// `payment.failed`: Payment failed.
pub const PAYMENT_FAILED: &str = "payment.failed";
/// `payment.refunded`: Payment refunded.
pub const PAYMENT_REFUNDED: &str = "payment.refunded";
/// `subscription.created`: Subscription created.
pub const SUBSCRIPTION_CREATED: &str = "subscription.created";
/// `subscription.updated`: Subscription updated.
pub const SUBSCRIPTION_UPDATED: &str = "subscription.updated";
/// `subscription.cancelled`: Subscription cancelled.
pub const SUBSCRIPTION_CANCELLED: &str = "subscription.cancelled";
/// `subscription.renewed`: Subscription renewed.
pub const SUBSCRIPTION_RENEWED: &str = "subscription.renewed";
// Customer
/// `customer.created`: Customer created.
pub const CUSTOMER_CREATED: &str = "customer.created";
/// `customer.updated`: Customer updated.
pub const CUSTOMER_UPDATED: &str = "customer.updated";
/// `customer.deleted`: Customer deleted.
pub const CUSTOMER_DELETED: &str = "customer.deleted";
// User
/// `user.registered`: User registered.
pub const USER_REGISTERED: &str = "user.registered";
/// `user.updated`: User profile updated.
pub const USER_UPDATED: &str = "user.updated";
/// `user.deleted`: User deleted.
pub const USER_DELETED: &str = "user.deleted";
// Communication
/// `email.sent`: Email sent.
pub const EMAIL_SENT: &str = "email.sent";
/// `email.delivered`: Email delivered.
pub const EMAIL_DELIVERED: &str = "email.delivered";
/// `email.bounced`: Email bounced.
pub const EMAIL_BOUNCED: &str = "email.bounced";
/// `email.failed`: Email failed.
pub const EMAIL_FAILED: &str = "email.failed";
/// `bulk_email.completed`: Bulk email job completed.
pub const BULK_EMAIL_COMPLETED: &str = "bulk_email.completed";
// File storage
/// `file.uploaded`: File uploaded.
pub const FILE_UPLOADED: &str = "file.uploaded";
/// `file.deleted`: File deleted.
pub const FILE_DELETED: &str = "file.deleted";
/// `file.scan_completed`: Virus scan completed.
pub const FILE_SCAN_COMPLETED: &str = "file.scan_completed";
/// `storage.quota_exceeded`: Storage quota exceeded.
pub const STORAGE_QUOTA_EXCEEDED: &str = "storage.quota_exceeded";
// Data transfer
/// `import.completed`: Import job completed.
pub const IMPORT_COMPLETED: &str = "import.completed";
/// `import.failed`: Import job failed.
pub const IMPORT_FAILED: &str = "import.failed";
/// `export.completed`: Export job completed.
pub const EXPORT_COMPLETED: &str = "export.completed";
/// `export.failed`: Export job failed.
pub const EXPORT_FAILED: &str = "export.failed";

/// Every type above, in catalog order.
pub const ALL: &[&str] = &[
    INVOICE_CREATED,
    INVOICE_PAID,
    INVOICE_PAYMENT_FAILED,
    INVOICE_VOIDED,
    PAYMENT_SUCCEEDED,
    PAYMENT_FAILED,
    PAYMENT_REFUNDED,
    SUBSCRIPTION_CREATED,
    SUBSCRIPTION_UPDATED,
    SUBSCRIPTION_CANCELLED,
    SUBSCRIPTION_RENEWED,
    CUSTOMER_CREATED,
    CUSTOMER_UPDATED,
    CUSTOMER_DELETED,
    USER_REGISTERED,
    USER_UPDATED,
    USER_DELETED,
    EMAIL_SENT,
    EMAIL_DELIVERED,
    EMAIL_BOUNCED,
    EMAIL_FAILED,
    BULK_EMAIL_COMPLETED,
    FILE_UPLOADED,
    FILE_DELETED,
    FILE_SCAN_COMPLETED,
    STORAGE_QUOTA_EXCEEDED,
    IMPORT_COMPLETED,
    IMPORT_FAILED,
    EXPORT_COMPLETED,
    EXPORT_FAILED,
];
