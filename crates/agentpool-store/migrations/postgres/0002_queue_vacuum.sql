-- The tasks table is a queue: every claim and completion leaves a dead row version, and dead
-- entries at the front of the claim index make every claim step over them until VACUUM runs.
-- Vacuum it early and without throttling instead of at the default 20% of the table.
ALTER TABLE tasks SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 2000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0.05
);
