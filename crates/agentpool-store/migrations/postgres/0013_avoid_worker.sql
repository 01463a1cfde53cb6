-- The worker a task was last given back by (its own fault or the infrastructure's, or a lease
-- it let expire): other workers get the task first for a short while. Cleared by the next claim.
ALTER TABLE tasks ADD COLUMN avoid_worker TEXT;
-- The tasks given back now, by whom: a restarted worker forgets its own through it. Only rows
-- with a worker are in it, and a claim clears theirs, so it stays small.
CREATE INDEX tasks_given_back ON tasks (avoid_worker) WHERE avoid_worker IS NOT NULL;
