-- Endpoint health, shared by every dispatcher: one row per subscription that
-- has had an attempt recorded against its health (absent = healthy, never failed).
-- Transitions happen under a row lock (SELECT … FOR UPDATE), so every
-- dispatcher sees one circuit.
CREATE TABLE endpoint_health (
    subscription_id      uuid PRIMARY KEY REFERENCES subscriptions (id) ON DELETE CASCADE,
    -- closed: send; open: send nothing until open_until; half_open: one probe in flight.
    circuit              text NOT NULL DEFAULT 'closed' CHECK (circuit IN ('closed', 'open', 'half_open')),
    consecutive_failures integer NOT NULL DEFAULT 0,
    last_success_at      timestamptz,
    last_failure_at      timestamptz,
    -- First failure since the last success: the auto-disable clock.
    failing_since        timestamptz,
    open_until           timestamptz,
    -- Openings since the circuit was last closed: the open period doubles with each.
    open_count           integer NOT NULL DEFAULT 0,
    -- The one delivery allowed through while half open, and until when that probe holds.
    probe_delivery_id    uuid,
    probe_until          timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
-- The scheduler looks for circuits whose open period is over.
CREATE INDEX endpoint_health_not_closed_idx ON endpoint_health (open_until) WHERE circuit <> 'closed';

-- Deliveries waiting in the database with a due time (a retry, or parked while
-- their circuit is open): the due-row scheduler takes them in due order…
CREATE INDEX deliveries_waiting_idx ON deliveries (next_attempt_at)
    WHERE NOT enqueued AND next_attempt_at IS NOT NULL;
-- …and circuit transitions move one subscription's waiting rows at once.
CREATE INDEX deliveries_waiting_subscription_idx ON deliveries (subscription_id, next_attempt_at)
    WHERE NOT enqueued AND next_attempt_at IS NOT NULL;
