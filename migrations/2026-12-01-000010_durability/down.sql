DROP INDEX IF EXISTS subscriptions_deleted_idx;
DROP INDEX IF EXISTS deliveries_event_ref_idx;
DROP INDEX IF EXISTS events_created_at_idx;
DROP INDEX IF EXISTS deliveries_due_idx;
ALTER TABLE deliveries DROP COLUMN IF EXISTS requeued_at;
