//! Why a followed task waits while it is queued, said on stderr once per reason.

use agentpool_core::TaskState;
use agentpool_core::protocol::{TaskDetail, WaitReason};

use crate::output::{self, StatusLine, Style};

/// What a follower says on stderr about why its queued task waits: each reason worth a line
/// once, and again only when it changes. The events say when the task is queued (submitted,
/// or a retry scheduled), not why: the task is read once then, and once more when a reason
/// bound to a time runs out (a delay, a spent day's budget), as another may follow it. No
/// event says when another task frees a branch, a slot or a dependency; reading the task
/// over and over to learn it is not worth the load on the server.
#[derive(Debug, Default)]
pub struct Waits {
    enabled: bool,
    /// The lines for the reasons it waits for, as last read.
    said: Vec<String>,
    /// Queued, and not read since it became so.
    unread: bool,
    /// Read since it last became queued.
    fresh: bool,
    /// When the first reason bound to a time runs out: read again then.
    recheck_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Waits {
    /// Saying nothing unless `enabled` (not with JSON output, whose readers read the task).
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            ..Self::default()
        }
    }

    /// With `first`, the task as read before following it, said at once.
    pub fn seeded(mut self, first: Option<&TaskDetail>) -> Self {
        if let Some(d) = first
            && self.enabled
        {
            for line in self.read(d, None) {
                eprintln!("{}", Style::stderr().dim(&line));
            }
        }
        self
    }

    pub(super) fn heard(&mut self, ev: &agentpool_core::Event) {
        use agentpool_core::Lifecycle as L;
        match ev.payload.lifecycle() {
            Some(L::Queued | L::RetryScheduled { .. }) => self.unread = !self.fresh,
            // It left the queue: what it waited for is over, and a later wait is news again.
            Some(L::Claimed { .. }) => *self = Self::new(self.enabled),
            _ => {}
        }
        if ev.is_terminal() {
            *self = Self::new(false);
        }
    }

    /// The follower reached the server again while the task is queued: what it waits for may
    /// have changed meanwhile.
    pub(super) fn reconnected(&mut self) {
        self.unread = true;
    }

    pub(super) fn due(&self) -> bool {
        self.enabled && (self.unread || self.recheck_at.is_some_and(|t| t <= chrono::Utc::now()))
    }

    /// Say what `read` (the task, when it could be read) newly waits for.
    pub(super) fn say(
        &mut self,
        read: Option<&TaskDetail>,
        retry_at: Option<chrono::DateTime<chrono::Utc>>,
        status: &mut StatusLine,
    ) {
        let Some(d) = read else {
            // A failed read says nothing, and is not tried again until the task is queued anew.
            self.unread = false;
            self.recheck_at = None;
            return;
        };
        let lines = self.read(d, retry_at);
        if !lines.is_empty() {
            status.clear();
            for line in lines {
                eprintln!("{}", Style::stderr().dim(&line));
            }
        }
    }

    /// Take in the task as read; the lines of the reasons not said yet. `retry_at`: when the
    /// retry the follower already told of runs, a delay not to tell again.
    fn read(&mut self, d: &TaskDetail, retry_at: Option<chrono::DateTime<chrono::Utc>>) -> Vec<String> {
        self.unread = false;
        self.fresh = true;
        let waiting: &[WaitReason] = if d.task.state == TaskState::Queued {
            &d.waiting
        } else {
            &[]
        };
        let now = chrono::Utc::now();
        // A time already past on this clock (the server's may differ) is no time to wait for.
        self.recheck_at = waiting
            .iter()
            .filter_map(|w| match w {
                WaitReason::Scheduled { run_after } => Some(*run_after),
                WaitReason::BudgetExhausted { until, .. } | WaitReason::GivenBack { until, .. } => {
                    Some(*until)
                }
                _ => None,
            })
            .filter(|t| *t > now)
            .min()
            .map(|t| t + chrono::Duration::seconds(1));
        let lines: Vec<String> = waiting
            .iter()
            .filter(|w| !matches!(w, WaitReason::Scheduled { run_after } if Some(*run_after) == retry_at))
            .filter_map(wait_line)
            .collect();
        let news = lines.iter().filter(|l| !self.said.contains(l)).cloned().collect();
        self.said = lines;
        news
    }
}

/// The line a follower says for a reason a person should know of; none for waiting for a free
/// worker (what every queued task does) or for another worker after one gave the task back
/// (the retry's own line said so). Times are absolute, so that a reason read again reads the same.
fn wait_line(w: &WaitReason) -> Option<String> {
    let words = match w {
        WaitReason::Scheduled { run_after } => format!("scheduled to run at {}", utc(*run_after)),
        WaitReason::Dependencies { pending } => format!(
            "for {} {} to succeed",
            if pending.len() == 1 {
                "dependency"
            } else {
                "dependencies"
            },
            pending
                .iter()
                .map(output::short_id)
                .collect::<Vec<_>>()
                .join(", "),
        ),
        WaitReason::BranchLocked { branch, held_by } => {
            format!("branch {branch} is locked by task {held_by}; it runs once that task ends")
        }
        WaitReason::ProjectSlotsFull { project, slots } => format!(
            "project {project} has {}; it runs once one frees up",
            WaitReason::slots_busy(*slots)
        ),
        WaitReason::BudgetExhausted {
            project,
            message,
            budget_usd,
            ..
        } => format!(
            "project {project}: {message} (its daily budget is ${budget_usd}); it runs then, \
             or once the budget is raised"
        ),
        w @ WaitReason::NoWorkerCanRun { .. } => format!(
            "no worker online offers {} yet; the task runs when one registers",
            w.no_worker_offers().unwrap_or_default()
        ),
        WaitReason::GivenBack { .. } | WaitReason::NoWorker => return None,
    };
    Some(format!("waiting: {words}"))
}

fn utc(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentpool_core::{Task, TaskId};
    use chrono::{Duration, Utc};

    fn queued(waiting: Vec<WaitReason>) -> TaskDetail {
        let now = Utc::now();
        let task: Task = serde_json::from_value(serde_json::json!({
            "id": TaskId::new(), "spec": {"kind": "command", "command": "true", "project": "web"},
            "state": "queued", "attempts": 0, "max_attempts": 3, "priority": 0,
            "created_at": now, "updated_at": now, "run_after": now, "started_at": null,
            "finished_at": null, "worker_id": null, "lease_token": null, "lease_expires_at": null,
            "error_class": null, "error_message": null, "result": null
        }))
        .expect("a task");
        TaskDetail {
            task,
            attempts_detail: Vec::new(),
            waiting,
        }
    }

    fn budget(until: chrono::DateTime<Utc>) -> WaitReason {
        WaitReason::BudgetExhausted {
            project: "web".into(),
            budget_usd: 5.0,
            spent_usd: 5.2,
            until,
            message: format!("budget exhausted until {}", utc(until)),
        }
    }

    /// A reason is said once however often it is read, a new one when it comes, and what
    /// every queued task waits for (a free worker) never.
    #[test]
    fn each_reason_is_said_once_and_again_only_when_it_changes() {
        let until = Utc::now() + Duration::hours(3);
        let mut w = Waits::new(true);
        let first = w.read(&queued(vec![budget(until), WaitReason::NoWorker]), None);
        assert_eq!(
            first,
            [format!(
                "waiting: project web: budget exhausted until {} (its daily budget is $5); \
                 it runs then, or once the budget is raised",
                utc(until)
            )]
        );
        // Read again (a reconnect), with more spent meanwhile: the same reason.
        let mut again = budget(until);
        if let WaitReason::BudgetExhausted { spent_usd, .. } = &mut again {
            *spent_usd = 6.0;
        }
        assert!(w.read(&queued(vec![again]), None).is_empty());
        // It changed: the slots are full now, and said; the budget, still there, is not.
        let slots = WaitReason::ProjectSlotsFull {
            project: "web".into(),
            slots: 2,
        };
        assert_eq!(
            w.read(&queued(vec![budget(until), slots]), None),
            ["waiting: project web has all 2 slots busy; it runs once one frees up"]
        );
        // It ran, and waits for the budget once more: that is news again.
        let claimed = agentpool_core::Event {
            task_id: TaskId::new(),
            seq: 2,
            at: Utc::now(),
            payload: agentpool_core::EventPayload::Lifecycle(agentpool_core::Lifecycle::Claimed {
                attempt: 1,
                worker: agentpool_core::WorkerId::parse("w1").expect("a worker id"),
            }),
        };
        w.heard(&claimed);
        assert_eq!(w.read(&queued(vec![budget(until)]), None).len(), 1);
        // The task is read again when the budget's day is over.
        assert_eq!(w.recheck_at, Some(until + Duration::seconds(1)));
    }

    /// A retry's delay was said by the retry's own line; a delay asked for is said.
    #[test]
    fn a_delay_is_said_unless_it_is_the_retry_already_told_of() {
        let at = Utc::now() + Duration::minutes(5);
        let scheduled = || queued(vec![WaitReason::Scheduled { run_after: at }]);
        assert!(Waits::new(true).read(&scheduled(), Some(at)).is_empty());
        assert_eq!(
            Waits::new(true).read(&scheduled(), None),
            [format!("waiting: scheduled to run at {}", utc(at))]
        );
    }
}
