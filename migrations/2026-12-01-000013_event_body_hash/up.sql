-- SHA-256 of a published event's canonical body (event_type, event_data,
-- metadata): a reused event_id with a different body is a 409 conflict, a true
-- repeat answers with the first result. NULL for events stored before this
-- column existed (a repeat of one of those is taken as a true repeat).
ALTER TABLE events ADD COLUMN body_hash bytea;
