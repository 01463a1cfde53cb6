-- Events are only ever read per task (`task_id = $1 AND seq > $2 ORDER BY seq`) and deleted per
-- task, so one index keyed (task_id, seq) serves every query; the separate primary key on seq
-- alone cost every appended event a second index entry (two per task on the claim and
-- completion path). seq stays an identity: it still orders a task's events.
ALTER TABLE events DROP CONSTRAINT events_pkey;
DROP INDEX events_task;
ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (task_id, seq);
