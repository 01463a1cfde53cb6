//! The history checker: what the database recorded about every task, set against what the
//! tasks' own commands recorded (one line per start and per end of a run).

use std::collections::BTreeMap;

use agentpool_core::protocol::TaskDetail;
use agentpool_core::{AttemptOutcome, TaskId, TaskState};

/// What the commands wrote: `start <task> <attempt>` and `end <task> <attempt>` lines.
#[derive(Debug, Default)]
pub struct Runs {
    pub starts: BTreeMap<String, u32>,
    pub ends: BTreeMap<String, u32>,
}

impl Runs {
    pub fn parse(text: &str) -> Self {
        let mut runs = Self::default();
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let (Some(kind), Some(task)) = (parts.next(), parts.next()) else {
                continue;
            };
            let map = match kind {
                "start" => &mut runs.starts,
                "end" => &mut runs.ends,
                _ => continue,
            };
            *map.entry(task.to_string()).or_default() += 1;
        }
        runs
    }
}

/// The figures a chaos run reports; `violations` must be empty.
#[derive(Debug, Default)]
pub struct Report {
    pub tasks: usize,
    pub succeeded: usize,
    /// Tasks that needed more than one attempt.
    pub retried: usize,
    /// Runs that started more than once for a task (starts beyond the first).
    pub restarted_runs: u32,
    /// Runs that reached their end more than once for a task (ends beyond the first).
    pub repeated_ends: u32,
    pub violations: Vec<String>,
}

/// Check every task of `submitted` against the recorded `details` and the commands' `runs`.
pub fn check(submitted: &[TaskId], details: &BTreeMap<TaskId, TaskDetail>, runs: &Runs) -> Report {
    let mut r = Report {
        tasks: submitted.len(),
        ..Report::default()
    };
    for id in submitted {
        let Some(d) = details.get(id) else {
            r.violations.push(format!("{id}: lost (not in the database)"));
            continue;
        };
        let key = id.to_string();
        if !d.task.state.is_finished() {
            r.violations
                .push(format!("{id}: not finished ({:?})", d.task.state));
        }
        if d.task.state == TaskState::Succeeded {
            r.succeeded += 1;
        } else {
            r.violations.push(format!(
                "{id}: ended {:?} ({:?}: {:?})",
                d.task.state, d.task.error_class, d.task.error_message
            ));
        }
        let successes = d
            .attempts_detail
            .iter()
            .filter(|a| a.outcome == AttemptOutcome::Succeeded)
            .count();
        if successes > 1 {
            r.violations
                .push(format!("{id}: {successes} successful attempts"));
        }
        // Attempts of one task never held a live lease at the same time: each ended (its
        // lease was given up or rescued) before the next began.
        // In the order they were claimed: an attempt given back keeps its number, so numbers
        // repeat, and lease tokens do not.
        let mut attempts = d.attempts_detail.clone();
        attempts.sort_by_key(|a| a.lease_token);
        for pair in attempts.windows(2) {
            match pair[0].ended_at {
                Some(end) if end <= pair[1].started_at => {}
                end => r.violations.push(format!(
                    "{id}: attempt {} (ended {end:?}) overlaps attempt {} (started {})",
                    pair[0].number, pair[1].number, pair[1].started_at
                )),
            }
        }
        // Every attempt ever started, those given back (a killed worker's) included.
        let started = u32::try_from(d.attempts_detail.len()).unwrap_or(u32::MAX);
        if started > 1 {
            r.retried += 1;
        }
        let starts = runs.starts.get(&key).copied().unwrap_or(0);
        let ends = runs.ends.get(&key).copied().unwrap_or(0);
        if d.task.state == TaskState::Succeeded && ends == 0 {
            r.violations
                .push(format!("{id}: succeeded but its command never ran to the end"));
        }
        if starts > started {
            r.violations
                .push(format!("{id}: {starts} runs started for {started} attempts"));
        }
        r.restarted_runs += starts.saturating_sub(1);
        r.repeated_ends += ends.saturating_sub(1);
    }
    r
}
