-- Sealed header values cannot be opened in SQL: reverting drops them rather
-- than leave ciphertext that would be sent as header values.
DROP INDEX subscriptions_clear_headers_idx;
UPDATE subscriptions SET headers = '{}'::jsonb WHERE headers_encrypted AND headers <> '{}'::jsonb;
ALTER TABLE subscriptions DROP COLUMN headers_encrypted;

DROP TRIGGER api_keys_deleted ON api_keys;
DROP TRIGGER api_keys_changed ON api_keys;
DROP FUNCTION webhooks_api_key_changed();
ALTER TABLE api_keys DROP COLUMN last_used_at;
