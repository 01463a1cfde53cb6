-- Queued tasks waiting for a dependency. With the claims' two indexes, every queued task is in
-- a partial index, so what reads the whole queue (queue statistics) does so without walking
-- the finished history. Only dependents enter it: a task without dependencies adds no entry.
CREATE INDEX tasks_waiting ON tasks (id) WHERE state = 'queued' AND deps_pending > 0;
