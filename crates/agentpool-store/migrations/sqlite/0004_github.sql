-- GitHub: webhook deliveries already handled (a redelivery creates nothing), and per task what
-- the server owes GitHub (status comment, pull request), worked through by the server's loop.
CREATE TABLE github_deliveries (
    id          TEXT PRIMARY KEY,
    event       TEXT NOT NULL,
    received_at INTEGER NOT NULL
);

CREATE TABLE github_links (
    task_id        TEXT PRIMARY KEY,
    project        TEXT NOT NULL,
    repository     TEXT NOT NULL,
    number         INTEGER,
    kind           TEXT NOT NULL,
    comment_id     INTEGER,
    reported_state TEXT,
    pr_number      INTEGER,
    pr_url         TEXT,
    pr_state       TEXT,
    branch         TEXT,
    done           INTEGER NOT NULL DEFAULT 0,
    failures       INTEGER NOT NULL DEFAULT 0,
    next_try_at    INTEGER NOT NULL,
    created_at     INTEGER NOT NULL
);
CREATE INDEX github_links_due ON github_links (next_try_at) WHERE done = 0;
CREATE INDEX github_links_pr ON github_links (repository, pr_number, created_at);
