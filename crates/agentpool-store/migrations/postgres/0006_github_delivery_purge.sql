-- Recorded webhook deliveries are purged by age in the maintenance loop.
CREATE INDEX github_deliveries_received ON github_deliveries (received_at);
