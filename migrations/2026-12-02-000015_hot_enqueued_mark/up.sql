-- Marking a delivery `enqueued` after the broker's confirm changes nothing but
-- that flag. PostgreSQL makes an update HOT (a new row version on the same
-- page, no index insertions) only when no column an index names changes, and
-- that includes the columns of partial-index predicates: three predicates
-- said `NOT enqueued`, so every mark wrote a new entry into each of the
-- table's indexes. Without them the mark is HOT.
--
-- The outbox relay now scans `deliveries_due_idx` (unfinished rows in due
-- order) and reads `enqueued` from the row; the waiting-row indexes keep
-- unfinished rows with a due time, whatever their flag.
DROP INDEX deliveries_outbox_idx;
DROP INDEX deliveries_waiting_idx;
DROP INDEX deliveries_waiting_subscription_idx;
CREATE INDEX deliveries_waiting_idx ON deliveries (next_attempt_at)
    WHERE next_attempt_at IS NOT NULL AND status IN ('pending', 'retrying');
CREATE INDEX deliveries_waiting_subscription_idx ON deliveries (subscription_id, next_attempt_at)
    WHERE next_attempt_at IS NOT NULL AND status IN ('pending', 'retrying');
