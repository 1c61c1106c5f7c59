ALTER TABLE events DROP COLUMN body_hash;
