-- No query reads deliveries by status alone: the delivery log, the bulk retry
-- and the jobs all filter by tenant first (deliveries_tenant_created_idx,
-- deliveries_subscription_idx), and the scheduler, outbox and reconciler have
-- partial indexes of their own. Every delivery writes three row versions that
-- change `status` or `enqueued` (no HOT update), so this index cost three
-- index insertions per delivery for nothing.
DROP INDEX IF EXISTS deliveries_status_idx;
