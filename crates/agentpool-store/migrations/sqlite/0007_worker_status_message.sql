-- Why a worker is unhealthy, as it said when it turned so; NULL for a healthy worker (cleared
-- when it registers again).
ALTER TABLE workers ADD COLUMN status_message TEXT;
