-- What an attempt that ended other than in success reported costing (a succeeded attempt's
-- is its task's result): a task's cost over all its attempts can then be told.
ALTER TABLE attempts ADD COLUMN cost_usd REAL;
