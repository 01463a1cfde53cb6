//! The candidates query of a constrained claim (tasks with a branch lock or a project), which
//! both backends write the same way but for how they filter by agent and labels. Each builds
//! its statement once.

/// The parts of the candidates query that differ between the backends.
pub(crate) struct Candidates<'a> {
    /// Which queued tasks `t` the worker may claim now (state, due time, agent, labels).
    pub filters: &'a str,
    /// The placeholder of the start of the budget day.
    pub since: &'a str,
    /// Conditions after the lock, slot and budget checks ("" or starting with ` AND `).
    pub also: &'a str,
    /// The placeholder of the row limit.
    pub limit: &'a str,
}

impl Candidates<'_> {
    /// The tasks `filters` admits whose branch lock is free and whose project has a free slot
    /// and budget left, in claim order, with what [`crate::rows::candidate`] reads. What each
    /// project with a daily budget spent today is read once per claim from its spend ledger
    /// (`spent`), and the running tasks of each project with slots are counted once (`busy`),
    /// not once per candidate: the candidates of one project share them. A project without
    /// slots is counted as running none; only its slots make the count matter.
    pub(crate) fn sql(&self) -> String {
        let Self {
            filters,
            since,
            also,
            limit,
        } = self;
        format!(
            "WITH spent AS MATERIALIZED ( \
               SELECT s.project, s.usd FROM project_spend s WHERE s.day = {since} \
                 AND s.project IN (SELECT name FROM projects WHERE daily_budget_usd IS NOT NULL)), \
             busy AS MATERIALIZED ( \
               SELECT r.project, count(*) AS n FROM tasks r \
               WHERE r.state = 'running' \
                 AND r.project IN (SELECT name FROM projects WHERE slots IS NOT NULL) \
               GROUP BY r.project) \
             SELECT t.id, t.lock_key, t.project, \
               COALESCE((SELECT n FROM busy WHERE busy.project = t.project), 0) AS project_running, \
               (SELECT p.slots FROM projects p WHERE p.name = t.project) AS project_slots \
             FROM tasks t \
             WHERE {filters} \
               AND (t.lock_key IS NULL OR NOT EXISTS (SELECT 1 FROM tasks r \
                    WHERE r.state = 'running' AND r.lock_key = t.lock_key)) \
               AND (t.project IS NULL OR NOT EXISTS (SELECT 1 FROM projects p \
                    WHERE p.name = t.project AND p.slots IS NOT NULL AND p.slots <= \
                      COALESCE((SELECT n FROM busy WHERE busy.project = t.project), 0))) \
               AND (t.project IS NULL OR NOT EXISTS (SELECT 1 FROM projects p \
                    WHERE p.name = t.project AND p.daily_budget_usd IS NOT NULL AND p.daily_budget_usd <= \
                      COALESCE((SELECT usd FROM spent WHERE spent.project = t.project), 0))){also} \
             ORDER BY t.priority DESC, t.run_after, t.id \
             LIMIT {limit}"
        )
    }
}
