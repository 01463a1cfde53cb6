-- agentpool queue schema (PostgreSQL). Timestamps are unix milliseconds (BIGINT): compared and
-- written by the store's clock, cheap to compare, no time-zone conversions on the hot path.

CREATE TABLE tasks (
    id               UUID PRIMARY KEY,       -- UUIDv7: sorts by creation
    spec             TEXT NOT NULL,          -- TaskSpec as JSON (only Rust reads it)
    state            TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    run_after        BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    required_agent   TEXT,
    labels           JSONB,                  -- NULL when none; matched with <@
    project          TEXT,
    lock_key         TEXT,                   -- repo#branch when the task names its branch
    constrained      BOOLEAN NOT NULL DEFAULT false,
    deps_pending     INTEGER NOT NULL DEFAULT 0,
    has_dependents   BOOLEAN NOT NULL DEFAULT false,
    idempotency_key  TEXT,
    worker_id        TEXT,
    lease_token      BIGINT NOT NULL DEFAULT 0,
    lease_expires_at BIGINT,
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    error_class      TEXT,
    error_message    TEXT,
    result           TEXT
);

-- Claim order over runnable-by-dependencies queued tasks only, split by whether a claim must
-- check locks/slots: finished and blocked rows never enter these indexes, so claim cost does not
-- grow with history.
CREATE INDEX tasks_claim ON tasks (priority DESC, run_after, id)
    WHERE state = 'queued' AND deps_pending = 0 AND NOT constrained;
CREATE INDEX tasks_claim_constrained ON tasks (priority DESC, run_after, id)
    WHERE state = 'queued' AND deps_pending = 0 AND constrained;
CREATE INDEX tasks_running ON tasks (lease_expires_at) WHERE state = 'running';
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
CREATE UNIQUE INDEX tasks_idempotency ON tasks (idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE task_deps (
    task_id UUID NOT NULL,
    dep_id  UUID NOT NULL,
    PRIMARY KEY (task_id, dep_id)
);
CREATE INDEX task_deps_dep ON task_deps (dep_id);

-- Finished attempts; the running one lives on the task row.
CREATE TABLE attempts (
    task_id       UUID NOT NULL,
    lease_token   BIGINT NOT NULL,
    number        INTEGER NOT NULL,
    worker_id     TEXT NOT NULL,
    started_at    BIGINT NOT NULL,
    ended_at      BIGINT,
    outcome       TEXT NOT NULL,
    error_class   TEXT,
    error_message TEXT,
    PRIMARY KEY (task_id, lease_token)
);

CREATE TABLE events (
    seq     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id UUID NOT NULL,
    at      BIGINT NOT NULL,
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
    slots             BIGINT NOT NULL,
    status            TEXT NOT NULL,
    registered_at     BIGINT NOT NULL,
    last_heartbeat_at BIGINT NOT NULL
);

CREATE TABLE projects (
    name       TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,
    slots      BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE credentials (
    name       TEXT PRIMARY KEY,
    ciphertext BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked    BOOLEAN NOT NULL DEFAULT false
);
