-- Durability: the reconciler finds unfinished deliveries whose message was
-- lost, and retention deletes old events with their deliveries and attempts.

-- When the reconciler last queued the delivery again; also its lease: a row
-- re-queued less than a grace period ago is left alone by every reconciler.
ALTER TABLE deliveries ADD COLUMN requeued_at timestamptz;

-- Reconciler: unfinished deliveries by due time (a pending delivery without a
-- `next_attempt_at` is due since it was created). Only unfinished rows are in
-- it, so it stays small; it holds no column a claim updates, so claims stay HOT.
CREATE INDEX deliveries_due_idx ON deliveries ((coalesce(next_attempt_at, created_at)))
    WHERE status IN ('pending', 'retrying');

-- Retention: the oldest events first.
CREATE INDEX events_created_at_idx ON events (created_at);

-- Retention deletes an event's deliveries, and the foreign key check of every
-- deleted event looks its deliveries up: without this index each would scan
-- the table. (Migration 3 dropped it while events were never deleted.)
CREATE INDEX deliveries_event_ref_idx ON deliveries (event_ref);

-- Retention: soft-deleted subscriptions waiting for their last delivery to go.
CREATE INDEX subscriptions_deleted_idx ON subscriptions (deleted_at) WHERE deleted_at IS NOT NULL;
