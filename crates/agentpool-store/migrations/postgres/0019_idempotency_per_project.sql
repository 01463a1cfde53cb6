-- An idempotency key names one submission within its project: two projects may use the same
-- key, each for its own task. Tasks of no project share one scope (a project's name is never
-- empty). The new index is built before the old one goes, in the migration's transaction, so
-- keys are unique throughout.
CREATE UNIQUE INDEX tasks_idempotency_scoped
    ON tasks ((COALESCE(project, '')), idempotency_key)
    WHERE idempotency_key IS NOT NULL;
DROP INDEX tasks_idempotency;
