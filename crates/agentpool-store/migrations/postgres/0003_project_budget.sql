-- A project's daily budget in USD: its queued tasks wait once the day's spend (UTC) reaches it.
ALTER TABLE projects ADD COLUMN daily_budget_usd DOUBLE PRECISION;
