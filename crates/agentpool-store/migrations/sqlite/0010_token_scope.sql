-- Tokens limited to projects and with an expiry. `projects` is a JSON array of project names
-- (empty: every project); `expires_at` and `last_used_at` are unix ms, NULL for never.
ALTER TABLE tokens ADD COLUMN projects TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
ALTER TABLE tokens ADD COLUMN last_used_at INTEGER;
-- A project's tasks newest first (a project token's list, `tasks list --project`, a project's
-- builds) without reading past the other projects' history; tasks of no project are not in it.
CREATE INDEX tasks_project ON tasks (project, id) WHERE project IS NOT NULL;
