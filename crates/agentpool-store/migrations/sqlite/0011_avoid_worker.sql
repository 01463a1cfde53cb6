-- The worker a task was last given back by (its own fault or the infrastructure's, or a lease
-- it let expire): other workers get the task first for a short while. Cleared by the next claim.
ALTER TABLE tasks ADD COLUMN avoid_worker TEXT;
