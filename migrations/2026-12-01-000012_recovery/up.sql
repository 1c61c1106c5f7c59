-- Recovery and the full delivery log (issue 12): what each attempt sent and
-- got back, the indexes of the tenant-wide log and the event lookup, the
-- recovery jobs, and the operational event types.

-- What was sent (every header, sensitive custom values masked) and what came
-- back (the first 8 KiB of the answer's headers), as JSON objects.
ALTER TABLE delivery_attempts
    ADD COLUMN request_headers  jsonb,
    ADD COLUMN response_headers jsonb;

-- The tenant-wide delivery log, newest first (and bulk retry by window).
CREATE INDEX deliveries_tenant_created_idx ON deliveries (tenant_id, created_at DESC, id DESC);
-- Every delivery of an event (event lookup; recovery's "has this subscription
-- a delivery of this event yet?") uses deliveries_event_ref_idx, which
-- migration 10 (retention) created.
-- A tenant's events by time (recover with include_missed).
CREATE INDEX events_tenant_created_idx ON events (tenant_id, created_at, id);

-- Background jobs that queue many deliveries (recover a window, bulk retry).
CREATE TABLE jobs (
    -- UUIDv7.
    id               uuid PRIMARY KEY,
    tenant_id        text NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('recover', 'retry')),
    status           text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'failed')),
    -- The window [since, until) of delivery (and, for include_missed, event) creation.
    since            timestamptz NOT NULL,
    until            timestamptz NOT NULL,
    -- Filters: the subscription (always set for recover), the event type.
    subscription_id  uuid,
    event_type       text,
    include_missed   boolean NOT NULL DEFAULT false,
    -- Candidates counted when the job was made, and attempts queued so far.
    total            bigint NOT NULL DEFAULT 0,
    queued           bigint NOT NULL DEFAULT 0,
    -- Keyset progress: 'failed' walks the failed deliveries, 'missed' the
    -- tenant's events (include_missed); the cursor is the last row passed.
    phase            text NOT NULL DEFAULT 'failed' CHECK (phase IN ('failed', 'missed')),
    cursor_created_at timestamptz,
    cursor_id        uuid,
    -- Which job runner holds the job, until when; another takes over once it lapses.
    lease_owner      uuid,
    lease_until      timestamptz,
    error            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
-- Jobs waiting for a runner.
CREATE INDEX jobs_running_idx ON jobs (created_at) WHERE status = 'running';

-- Operational events: sent to subscriptions that ask for them by exact type
-- or `webhook.*` (the `*` pattern does not match the webhook category).
INSERT INTO event_types (event_type, category, description) VALUES
    ('webhook.subscription.disabled', 'webhook', 'A subscription was disabled (410 Gone or auto-disable)'),
    ('webhook.delivery.failed', 'webhook', 'A delivery failed for good (no retries left)')
ON CONFLICT (event_type) DO NOTHING;
