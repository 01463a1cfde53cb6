-- agentpool queue schema (SQLite). Timestamps are unix milliseconds (INTEGER).

CREATE TABLE tasks (
    id               TEXT PRIMARY KEY,       -- UUIDv7 text: sorts by creation
    spec             TEXT NOT NULL,          -- TaskSpec as JSON
    state            TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    run_after        INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    required_agent   TEXT,
    labels           TEXT,                   -- JSON object, NULL when none
    project          TEXT,
    lock_key         TEXT,                   -- repo#branch when the task names its branch
    constrained      INTEGER NOT NULL DEFAULT 0,
    deps_pending     INTEGER NOT NULL DEFAULT 0,
    has_dependents   INTEGER NOT NULL DEFAULT 0,
    idempotency_key  TEXT,
    worker_id        TEXT,
    lease_token      INTEGER NOT NULL DEFAULT 0,
    lease_expires_at INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error_class      TEXT,
    error_message    TEXT,
    result           TEXT
);

-- Claim order over runnable-by-dependencies queued tasks only: finished tasks never enter it.
CREATE INDEX tasks_claim ON tasks (priority DESC, run_after, id)
    WHERE state = 'queued' AND deps_pending = 0;
CREATE INDEX tasks_running ON tasks (lease_expires_at) WHERE state = 'running';
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
CREATE UNIQUE INDEX tasks_idempotency ON tasks (idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE task_deps (
    task_id TEXT NOT NULL,
    dep_id  TEXT NOT NULL,
    PRIMARY KEY (task_id, dep_id)
);
CREATE INDEX task_deps_dep ON task_deps (dep_id);

-- Finished attempts; the running one lives on the task row.
CREATE TABLE attempts (
    task_id       TEXT NOT NULL,
    lease_token   INTEGER NOT NULL,
    number        INTEGER NOT NULL,
    worker_id     TEXT NOT NULL,
    started_at    INTEGER NOT NULL,
    ended_at      INTEGER,
    outcome       TEXT NOT NULL,
    error_class   TEXT,
    error_message TEXT,
    PRIMARY KEY (task_id, lease_token)
);

CREATE TABLE events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    at      INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    data    TEXT NOT NULL
);
CREATE INDEX events_task ON events (task_id, seq);

CREATE TABLE workers (
    id                TEXT PRIMARY KEY,
    hostname          TEXT NOT NULL,
    version           TEXT NOT NULL,
    agents            TEXT NOT NULL,
    labels            TEXT NOT NULL,
    slots             INTEGER NOT NULL,
    status            TEXT NOT NULL,
    registered_at     INTEGER NOT NULL,
    last_heartbeat_at INTEGER NOT NULL
);

CREATE TABLE projects (
    name       TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,
    slots      INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE credentials (
    name       TEXT PRIMARY KEY,
    ciphertext BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked    INTEGER NOT NULL DEFAULT 0
);
