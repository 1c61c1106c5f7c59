CREATE INDEX deliveries_status_idx ON deliveries (status, created_at);
