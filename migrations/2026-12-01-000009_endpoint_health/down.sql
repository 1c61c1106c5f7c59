DROP INDEX deliveries_waiting_subscription_idx;
DROP INDEX deliveries_waiting_idx;
DROP TABLE endpoint_health;
