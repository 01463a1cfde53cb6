-- GitHub: webhook deliveries already handled (a redelivery creates nothing), and per task what
-- the server owes GitHub (status comment, pull request), worked through by the server's loop.
CREATE TABLE github_deliveries (
    id          TEXT PRIMARY KEY,
    event       TEXT NOT NULL,
    received_at BIGINT NOT NULL
);

CREATE TABLE github_links (
    task_id        TEXT PRIMARY KEY,
    project        TEXT NOT NULL,
    repository     TEXT NOT NULL,
    number         BIGINT,
    kind           TEXT NOT NULL,
    comment_id     BIGINT,
    reported_state TEXT,
    pr_number      BIGINT,
    pr_url         TEXT,
    pr_state       TEXT,
    branch         TEXT,
    done           BIGINT NOT NULL DEFAULT 0,
    failures       BIGINT NOT NULL DEFAULT 0,
    next_try_at    BIGINT NOT NULL,
    created_at     BIGINT NOT NULL
);
CREATE INDEX github_links_due ON github_links (next_try_at) WHERE done = 0;
CREATE INDEX github_links_pr ON github_links (repository, pr_number, created_at);
