//! What a worker logs about an attempt the server may never hear of: what it did in git (a
//! pushed commit is on the remote whether or not the report arrives, and the worker's log is
//! then the only record of it), and its retries against a server that does not answer.

use std::time::{Duration, Instant};

use agentpool_core::TaskResult;

use crate::pipeline::Report;

/// How often a report still being retried is logged again.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// What the attempt behind `report` did in git, for a log line: "it pushed commit … to branch
/// …", "its commit … was not pushed", "it made no commit". Built from the result the pipeline
/// already masked, so it names no secret.
pub fn what_it_did(report: &Report) -> String {
    describe(report.result())
}

fn describe(result: Option<&TaskResult>) -> String {
    let Some(r) = result else {
        return "it made no commit".into();
    };
    let Some(sha) = &r.commit_sha else {
        return "it made no commit".into();
    };
    match (&r.branch, r.pushed) {
        (Some(b), true) => format!("it pushed commit {sha} to branch {b}"),
        (None, true) => format!("it pushed commit {sha}"),
        // The branch was on the remote before: it is there, without this commit.
        (Some(b), false) => format!("its commit {sha} was not pushed (branch {b} does not have it)"),
        (None, false) => format!("its commit {sha} was not pushed"),
    }
}

/// The failed tries of one report (or one task's events) against a server that does not
/// take it, and when to say so: at the first failure, then at most once a minute, so that a
/// long outage is visible without a line per try.
#[derive(Debug, Default)]
pub struct Retries {
    tries: u32,
    logged_at: Option<Instant>,
}

impl Retries {
    pub fn new() -> Self {
        Self::default()
    }

    /// Count a failed try; the tries so far when it is time to log them.
    pub fn failed(&mut self) -> Option<u32> {
        self.failed_at(Instant::now())
    }

    fn failed_at(&mut self, now: Instant) -> Option<u32> {
        self.tries += 1;
        if self
            .logged_at
            .is_some_and(|at| now.saturating_duration_since(at) < LOG_EVERY)
        {
            return None;
        }
        self.logged_at = Some(now);
        Some(self.tries)
    }

    /// The call went through: the tries it took when a failure was logged (so that the
    /// recovery is logged too), and the count starts over.
    pub fn succeeded(&mut self) -> Option<u32> {
        let logged = self.logged_at.take().map(|_| self.tries + 1);
        self.tries = 0;
        logged
    }
}

/// "1 try", "3 tries".
pub fn tries(n: u32) -> String {
    agentpool_core::render::count(n, "try", "tries")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_is_logged_then_at_most_one_a_minute() {
        let mut r = Retries::new();
        let t0 = Instant::now();
        assert_eq!(r.failed_at(t0), Some(1));
        assert_eq!(r.failed_at(t0 + Duration::from_secs(15)), None);
        assert_eq!(r.failed_at(t0 + Duration::from_secs(59)), None);
        assert_eq!(r.failed_at(t0 + Duration::from_secs(60)), Some(4));
        assert_eq!(r.failed_at(t0 + Duration::from_secs(90)), None);
        assert_eq!(
            r.succeeded(),
            Some(6),
            "five failures, then the try that went through"
        );
        assert_eq!(
            r.failed_at(t0 + Duration::from_secs(91)),
            Some(1),
            "a new outage is told at once"
        );
    }

    #[test]
    fn a_call_that_never_failed_says_nothing_when_it_goes_through() {
        assert_eq!(Retries::new().succeeded(), None);
    }

    #[test]
    fn what_an_unreported_attempt_did_names_its_commit_branch_and_push() {
        let pushed = TaskResult {
            commit_sha: Some("c0ffee".into()),
            branch: Some("agentpool/x".into()),
            pushed: true,
            ..TaskResult::default()
        };
        assert_eq!(
            describe(Some(&pushed)),
            "it pushed commit c0ffee to branch agentpool/x"
        );
        let kept = TaskResult {
            pushed: false,
            branch: None,
            ..pushed.clone()
        };
        assert_eq!(describe(Some(&kept)), "its commit c0ffee was not pushed");
        assert_eq!(describe(Some(&TaskResult::default())), "it made no commit");
        assert_eq!(describe(None), "it made no commit");
        assert_eq!(
            what_it_did(&Report::Abandon(Some(pushed))),
            "it pushed commit c0ffee to branch agentpool/x"
        );
    }
}
