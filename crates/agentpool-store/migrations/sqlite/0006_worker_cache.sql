-- Each worker's mirror cache as it last reported it (hits, misses, bytes, mirrors; JSON), NULL
-- for a worker that never reported one.
ALTER TABLE workers ADD COLUMN cache_stats TEXT;
