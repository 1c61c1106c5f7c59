//! Diesel table definitions, mirroring `migrations/`.

diesel::table! {
    api_keys (id) {
        id -> Uuid,
        key_hash -> Bytea,
        tenant_id -> Nullable<Text>,
        is_publisher -> Bool,
        name -> Nullable<Text>,
        created_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
        last_used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    event_types (event_type) {
        event_type -> Text,
        category -> Text,
        description -> Text,
    }
}

diesel::table! {
    subscriptions (id) {
        id -> Uuid,
        tenant_id -> Text,
        url -> Text,
        description -> Nullable<Text>,
        events -> Array<Text>,
        headers -> Jsonb,
        is_active -> Bool,
        retry_enabled -> Bool,
        max_retries -> Int4,
        timeout_seconds -> Int4,
        secret_encrypted -> Bytea,
        previous_secret_encrypted -> Nullable<Bytea>,
        secret_rotated_at -> Nullable<Timestamptz>,
        disabled_reason -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
        headers_encrypted -> Bool,
    }
}

diesel::table! {
    events (id) {
        id -> Uuid,
        tenant_id -> Text,
        event_id -> Text,
        event_type -> Text,
        payload -> Text,
        source -> Text,
        delivery_count -> Int4,
        created_at -> Timestamptz,
        body_hash -> Nullable<Bytea>,
    }
}

diesel::table! {
    deliveries (id) {
        id -> Uuid,
        tenant_id -> Text,
        subscription_id -> Uuid,
        event_ref -> Uuid,
        event_id -> Text,
        event_type -> Text,
        status -> Text,
        attempt_count -> Int4,
        next_attempt_at -> Nullable<Timestamptz>,
        last_status_code -> Nullable<Int4>,
        last_error -> Nullable<Text>,
        manual_retry -> Bool,
        enqueued -> Bool,
        relay_lease_until -> Nullable<Timestamptz>,
        claimed_until -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        requeued_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    delivery_attempts (id) {
        id -> Uuid,
        delivery_id -> Uuid,
        attempt -> Int4,
        outcome -> Text,
        status_code -> Nullable<Int4>,
        error -> Nullable<Text>,
        duration_ms -> Int4,
        response_body -> Nullable<Text>,
        created_at -> Timestamptz,
        request_headers -> Nullable<Jsonb>,
        response_headers -> Nullable<Jsonb>,
    }
}

diesel::table! {
    jobs (id) {
        id -> Uuid,
        tenant_id -> Text,
        kind -> Text,
        status -> Text,
        since -> Timestamptz,
        until -> Timestamptz,
        subscription_id -> Nullable<Uuid>,
        event_type -> Nullable<Text>,
        include_missed -> Bool,
        total -> Int8,
        queued -> Int8,
        phase -> Text,
        cursor_created_at -> Nullable<Timestamptz>,
        cursor_id -> Nullable<Uuid>,
        lease_owner -> Nullable<Uuid>,
        lease_until -> Nullable<Timestamptz>,
        error -> Nullable<Text>,
        created_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    endpoint_health (subscription_id) {
        subscription_id -> Uuid,
        circuit -> Text,
        consecutive_failures -> Int4,
        last_success_at -> Nullable<Timestamptz>,
        last_failure_at -> Nullable<Timestamptz>,
        failing_since -> Nullable<Timestamptz>,
        open_until -> Nullable<Timestamptz>,
        open_count -> Int4,
        probe_delivery_id -> Nullable<Uuid>,
        probe_until -> Nullable<Timestamptz>,
        updated_at -> Timestamptz,
    }
}

diesel::joinable!(endpoint_health -> subscriptions (subscription_id));
diesel::joinable!(deliveries -> subscriptions (subscription_id));
diesel::joinable!(deliveries -> events (event_ref));
diesel::joinable!(delivery_attempts -> deliveries (delivery_id));

diesel::allow_tables_to_appear_in_same_query!(
    api_keys,
    event_types,
    subscriptions,
    events,
    deliveries,
    delivery_attempts,
    jobs,
    endpoint_health,
);
