-- API key lifecycle (list, revoke, last use) and custom header values sealed at rest.

-- When the key last authenticated a request; written at most once a minute per key.
ALTER TABLE api_keys ADD COLUMN last_used_at timestamptz;

-- Every ingest caches keys it has looked up. A revoked, deleted or re-scoped
-- key is announced on this channel so each ingest drops its cache at once,
-- whichever way the row changed (the CLI or SQL by hand). Updates that only
-- touch `last_used_at` are not announced.
CREATE FUNCTION webhooks_api_key_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('webhooks_api_key_revoked', OLD.id::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER api_keys_changed AFTER UPDATE OF revoked_at, key_hash, tenant_id, is_publisher ON api_keys
    FOR EACH ROW EXECUTE FUNCTION webhooks_api_key_changed();
CREATE TRIGGER api_keys_deleted AFTER DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION webhooks_api_key_changed();

-- Custom header values are sealed with AES-256-GCM under WEBHOOK_SECRET_KEY,
-- which the database never sees: SQL cannot seal them. Rows with no header
-- need nothing; the others keep their clear values, are read as such, and are
-- sealed by ingest when it starts (`seal_clear_headers`).
ALTER TABLE subscriptions ADD COLUMN headers_encrypted boolean NOT NULL DEFAULT false;
UPDATE subscriptions SET headers_encrypted = true WHERE headers = '{}'::jsonb;
-- What is still to seal (normally nothing).
CREATE INDEX subscriptions_clear_headers_idx ON subscriptions (id) WHERE NOT headers_encrypted;
