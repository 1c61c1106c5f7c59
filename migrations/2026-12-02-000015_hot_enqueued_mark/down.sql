DROP INDEX deliveries_waiting_idx;
DROP INDEX deliveries_waiting_subscription_idx;
CREATE INDEX deliveries_waiting_idx ON deliveries (next_attempt_at)
    WHERE NOT enqueued AND next_attempt_at IS NOT NULL;
CREATE INDEX deliveries_waiting_subscription_idx ON deliveries (subscription_id, next_attempt_at)
    WHERE NOT enqueued AND next_attempt_at IS NOT NULL;
CREATE INDEX deliveries_outbox_idx ON deliveries (updated_at)
    WHERE NOT enqueued AND status IN ('pending', 'retrying');
