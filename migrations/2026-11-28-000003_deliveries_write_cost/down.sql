CREATE INDEX deliveries_event_ref_idx ON deliveries (event_ref);
ALTER TABLE deliveries RESET (fillfactor);
