-- Which node sends each webhook delivery (the node where its event happened) and follows each
-- schedule run (the node that started it), until a node that takes over from a lost one adopts them.
ALTER TABLE webhook_deliveries ADD COLUMN node TEXT;
CREATE INDEX webhook_deliveries_pending_by_node ON webhook_deliveries (node) WHERE state = 'pending';
ALTER TABLE schedule_runs ADD COLUMN node TEXT;
