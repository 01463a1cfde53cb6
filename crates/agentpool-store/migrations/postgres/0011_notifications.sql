-- Notifications: HTTP endpoints told of tasks that end. `spec` is the NotificationSpec (JSON);
-- `scanned_until` is how far the finished tasks were looked through (unix ms): each pass looks
-- again from a little before it, so a task whose end committed late is still found.
CREATE TABLE notifications (
    name          TEXT PRIMARY KEY,
    spec          TEXT NOT NULL,
    scanned_until BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- One task's end to tell one notification: the outbox the delivery loop works through. The
-- unique key makes finding the same end twice (two replicas, overlapping passes) one row; a
-- task retried and ended again is a new end. `lease_until` keeps a delivery being sent by one
-- replica from being sent by another meanwhile (unix ms, 0 when free).
CREATE TABLE notification_deliveries (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification    TEXT NOT NULL,
    task_id         TEXT NOT NULL,
    finished_at     BIGINT NOT NULL,
    event           TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    lease_until     BIGINT NOT NULL DEFAULT 0,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (notification, task_id, finished_at)
);
CREATE INDEX notification_deliveries_due ON notification_deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX notification_deliveries_list ON notification_deliveries (notification, id);
CREATE INDEX notification_deliveries_done ON notification_deliveries (updated_at)
    WHERE state <> 'pending';
