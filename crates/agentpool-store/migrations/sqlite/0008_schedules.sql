-- Schedules: a task template submitted on a cron expression. `spec` is the ScheduleSpec
-- (JSON); `next_run_at` is NULL while paused; `lease_until` keeps a run being submitted by one
-- replica from being submitted by another meanwhile (unix ms, 0 when free).
CREATE TABLE schedules (
    name         TEXT PRIMARY KEY,
    spec         TEXT NOT NULL,
    next_run_at  INTEGER,
    lease_until  INTEGER NOT NULL DEFAULT 0,
    last_run_at  INTEGER,
    last_task    TEXT,
    last_message TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE next_run_at IS NOT NULL;
