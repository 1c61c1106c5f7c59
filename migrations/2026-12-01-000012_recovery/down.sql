DELETE FROM event_types WHERE event_type IN ('webhook.subscription.disabled', 'webhook.delivery.failed');
DROP TABLE jobs;
DROP INDEX events_tenant_created_idx;
DROP INDEX deliveries_tenant_created_idx;
ALTER TABLE delivery_attempts DROP COLUMN response_headers, DROP COLUMN request_headers;
