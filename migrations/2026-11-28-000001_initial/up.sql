-- The whole product's schema: API keys, the event catalog, subscriptions,
-- events, deliveries (also the outbox) and delivery attempts.

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    -- SHA-256 of the bearer token; the token itself is never stored.
    key_hash     bytea NOT NULL UNIQUE,
    -- NULL for publisher keys, which may publish for any tenant.
    tenant_id    text,
    is_publisher boolean NOT NULL DEFAULT false,
    name         text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    CONSTRAINT api_keys_scope CHECK (is_publisher OR tenant_id IS NOT NULL)
);

CREATE TABLE event_types (
    event_type  text PRIMARY KEY,
    category    text NOT NULL,
    description text NOT NULL
);

CREATE TABLE subscriptions (
    -- UUIDv7: ordered by creation, so it is also the pagination cursor.
    id                          uuid PRIMARY KEY,
    tenant_id                   text NOT NULL,
    url                         text NOT NULL,
    description                 text,
    -- Catalog types, `category.*` or `*`.
    events                      text[] NOT NULL,
    headers                     jsonb NOT NULL DEFAULT '{}'::jsonb,
    is_active                   boolean NOT NULL DEFAULT true,
    retry_enabled               boolean NOT NULL DEFAULT true,
    max_retries                 integer NOT NULL DEFAULT 3 CHECK (max_retries BETWEEN 0 AND 10),
    timeout_seconds             integer NOT NULL DEFAULT 30 CHECK (timeout_seconds BETWEEN 1 AND 60),
    -- AES-256-GCM (nonce || ciphertext || tag) under WEBHOOK_SECRET_KEY.
    secret_encrypted            bytea NOT NULL,
    -- The secret before the last rotation, still signed with for 24 hours.
    previous_secret_encrypted   bytea,
    secret_rotated_at           timestamptz,
    disabled_reason             text,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    -- Soft delete: the delivery log outlives the subscription.
    deleted_at                  timestamptz
);
-- Listing a tenant's subscriptions by cursor.
CREATE INDEX subscriptions_tenant_id_idx ON subscriptions (tenant_id, id) WHERE deleted_at IS NULL;
-- Fan-out: a tenant's active subscriptions whose `events` overlap the event's patterns.
CREATE INDEX subscriptions_matching_idx ON subscriptions USING gin (events)
    WHERE is_active AND deleted_at IS NULL;
CREATE INDEX subscriptions_active_tenant_idx ON subscriptions (tenant_id)
    WHERE is_active AND deleted_at IS NULL;

CREATE TABLE events (
    id             uuid PRIMARY KEY,
    tenant_id      text NOT NULL,
    -- The publisher's idempotency key (or `evt_` + UUID).
    event_id       text NOT NULL,
    event_type     text NOT NULL,
    -- The exact envelope bytes every subscriber receives, on every attempt.
    payload        text NOT NULL,
    source         text NOT NULL,
    delivery_count integer NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_tenant_event_id_key UNIQUE (tenant_id, event_id)
);

CREATE TABLE deliveries (
    id               uuid PRIMARY KEY,
    tenant_id        text NOT NULL,
    subscription_id  uuid NOT NULL REFERENCES subscriptions (id),
    event_ref        uuid NOT NULL REFERENCES events (id),
    event_id         text NOT NULL,
    event_type       text NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'retrying', 'succeeded', 'failed')),
    -- Attempts finished so far; a queued message names attempt_count + 1.
    attempt_count    integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    last_status_code integer,
    last_error       text,
    -- Set by a manual retry: that one attempt is not followed by automatic retries.
    manual_retry     boolean NOT NULL DEFAULT false,
    -- Outbox: false until the broker has confirmed the message for the next attempt.
    enqueued         boolean NOT NULL DEFAULT false,
    -- Outbox relay lease, so replicas do not publish the same row together.
    relay_lease_until timestamptz,
    -- Dispatcher claim: the attempt in flight and until when the claim holds.
    claimed_until    timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- Delivery log of a subscription, newest first.
CREATE INDEX deliveries_subscription_idx ON deliveries (subscription_id, created_at DESC, id DESC);
-- Deliveries by status (operations, dashboards).
CREATE INDEX deliveries_status_idx ON deliveries (status, created_at);
-- Outbox relay: unfinished deliveries whose next message is not confirmed yet.
CREATE INDEX deliveries_outbox_idx ON deliveries (updated_at)
    WHERE NOT enqueued AND status IN ('pending', 'retrying');
CREATE INDEX deliveries_event_ref_idx ON deliveries (event_ref);

CREATE TABLE delivery_attempts (
    id            uuid PRIMARY KEY,
    delivery_id   uuid NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt       integer NOT NULL,
    -- Stable outcome code: success, http_status, timeout, connect, dns, tls,
    -- redirect, blocked_address, request, subscription_inactive...
    outcome       text NOT NULL,
    status_code   integer,
    error         text,
    duration_ms   integer NOT NULL,
    response_body text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT delivery_attempts_delivery_attempt_key UNIQUE (delivery_id, attempt)
);
