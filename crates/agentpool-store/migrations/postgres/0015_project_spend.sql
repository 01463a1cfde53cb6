-- What each project's attempts reported spending, per UTC day (`day`: its midnight, epoch ms).
-- Every attempt that reports a cost adds it when it ends, so a retried task counts each run it
-- paid for, and a claim of a budgeted project's tasks reads one row, not the day's results.
CREATE TABLE project_spend (
    project TEXT NOT NULL,
    day BIGINT NOT NULL,
    usd DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (project, day)
);
-- Today's spend so far, as the claim summed it before this table: the latest result of each
-- of the project's tasks updated since midnight UTC.
INSERT INTO project_spend (project, day, usd)
SELECT project, d.day, SUM(CAST(CAST(result AS jsonb)->>'cost_usd' AS DOUBLE PRECISION))
FROM tasks,
     (SELECT CAST(EXTRACT(EPOCH FROM date_trunc('day', now() AT TIME ZONE 'UTC')) * 1000 AS BIGINT) AS day) d
WHERE project IS NOT NULL AND result IS NOT NULL AND updated_at >= d.day
  AND CAST(result AS jsonb)->>'cost_usd' IS NOT NULL
GROUP BY project, d.day;
