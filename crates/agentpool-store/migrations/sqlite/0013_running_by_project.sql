-- A project's running tasks, which a claim of the project's tasks counts for each candidate
-- (its slots). Without it SQLite counts them through `tasks_project`, reading every task the
-- project ever had, once per candidate: a claim slowed down with the project's history.
CREATE INDEX tasks_running_project ON tasks (project) WHERE state = 'running' AND project IS NOT NULL;
