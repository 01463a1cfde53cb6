//! Wire types of the task API: submit (one or a batch), task detail with why it waits, task
//! and event pages.

use serde::{Deserialize, Serialize};

use crate::{Attempt, Event, Task, TaskId, TaskSpec, Timestamp};

/// Result of an enqueue: the task, and whether it was created now (false when an idempotency
/// key matched an earlier task).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enqueued {
    pub task: Task,
    pub created: bool,
}

/// Why a queued task is not running yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum WaitReason {
    /// `run_after` is in the future (a delayed task or a retry backoff).
    Scheduled {
        run_after: Timestamp,
    },
    Dependencies {
        pending: Vec<TaskId>,
    },
    BranchLocked {
        branch: String,
        held_by: TaskId,
    },
    ProjectSlotsFull {
        project: String,
        slots: u32,
    },
    /// The project's tasks spent its daily budget today (UTC); it starts again at `until`
    /// (the next UTC midnight) or when the budget is raised.
    BudgetExhausted {
        project: String,
        budget_usd: f64,
        spent_usd: f64,
        until: Timestamp,
        /// "budget exhausted until `until`", for people reading the API.
        message: String,
    },
    /// Worker `worker` gave it back (the attempt failed on the worker's or the infrastructure's
    /// side, or its lease expired): other workers get it first, and that worker may claim it
    /// again from `until` on.
    GivenBack {
        worker: String,
        until: Timestamp,
    },
    /// Nothing holds it back: it waits for a free worker with its agent and labels.
    NoWorker,
    /// No worker that could claim it is registered: none online (and not draining) offers
    /// its agent with all its labels and takes tasks of its project. It waits for one to
    /// register or come back.
    NoWorkerCanRun {
        /// The agent it needs (`command` for a command task).
        agent: Option<String>,
        #[serde(default, skip_serializing_if = "crate::Labels::is_empty")]
        labels: crate::Labels,
        /// Workers that offer its agent and labels are online, but all take only other
        /// projects' tasks.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        other_projects: bool,
        /// Its project, with `other_projects` (none: a task of no project).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        project: Option<String>,
        /// Workers that offer it but are unhealthy (they claim nothing until restarted).
        #[serde(default, skip_serializing_if = "is_zero")]
        unhealthy: u32,
        /// Its repository is a local one, and workers that offer all else it needs are online
        /// but do not read local repositories (`agentpool worker --allow-local-repos`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        local_repos_not_read: bool,
    },
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl WaitReason {
    /// What a worker must offer to run the task of a [`WaitReason::NoWorkerCanRun`], in words:
    /// "agent claude-code with labels gpu=yes". The label a task on a local repository
    /// carries, when it is its only one, is said in words too: "agent codex on local
    /// repositories"; among others it is listed as they are.
    pub fn needs(agent: Option<&str>, labels: &crate::Labels) -> String {
        let local_repos = Self::only_local_repos(labels);
        let labels = if local_repos {
            String::new()
        } else {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut words = match (agent, labels.is_empty()) {
            (Some(a), true) => format!("agent {a}"),
            (Some(a), false) => format!("agent {a} with labels {labels}"),
            (None, false) => format!("any agent with labels {labels}"),
            (None, true) => "any agent".into(),
        };
        if local_repos {
            words.push_str(" on local repositories");
        }
        words
    }

    /// Whether the one label in `labels` is the one a task on a local repository carries.
    fn only_local_repos(labels: &crate::Labels) -> bool {
        labels.len() == 1
            && labels
                .get(crate::spec::LOCAL_REPOS_LABEL)
                .is_some_and(|v| v == "true")
    }

    /// What the task of a [`WaitReason::NoWorkerCanRun`] needs and the unhealthy workers that
    /// offer it, in words: "agent claude-code", "agent claude-code for project web" (those
    /// that offer it take only other projects' tasks), "agent claude-code (1 that does is
    /// unhealthy)", "agent command on local repositories (those online that offer the rest do
    /// not read local repositories: …)". `None` for any other reason.
    pub fn no_worker_offers(&self) -> Option<String> {
        let WaitReason::NoWorkerCanRun {
            agent,
            labels,
            other_projects,
            project,
            unhealthy,
            local_repos_not_read,
        } = self
        else {
            return None;
        };
        let mut needs = Self::needs(agent.as_deref(), labels);
        if *other_projects {
            match project {
                Some(p) => needs.push_str(&format!(" for project {p}")),
                None => needs.push_str(" for tasks of no project"),
            }
        }
        if *local_repos_not_read {
            needs.push_str(
                " (those online that offer the rest do not read local repositories: \
                 agentpool worker --allow-local-repos)",
            );
        }
        Some(match unhealthy {
            0 => needs,
            1 => format!("{needs} (1 that does is unhealthy)"),
            n => format!("{needs} ({n} that do are unhealthy)"),
        })
    }

    /// The busy slots of a [`WaitReason::ProjectSlotsFull`], in words: "its one slot busy",
    /// "all 3 slots busy".
    pub fn slots_busy(slots: u32) -> String {
        match slots {
            1 => "its one slot busy".into(),
            n => format!("all {n} slots busy"),
        }
    }
}

/// A task with its attempts and, while queued, why it waits (`GET /v1/tasks/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDetail {
    #[serde(flatten)]
    pub task: Task,
    pub attempts_detail: Vec<Attempt>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<WaitReason>,
}

/// `POST /v1/tasks/{id}/cancel`, whose body is optional: why, kept in the task's message and
/// its events ("canceled by ci (submitter): superseded by #42").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// 1-500 characters, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The longest cancel reason the server accepts, in characters.
pub const MAX_CANCEL_REASON_CHARS: usize = 500;

impl CancelRequest {
    /// The reason to record, trimmed (`None` without one), or why it cannot be: empty, longer
    /// than [`MAX_CANCEL_REASON_CHARS`] characters, or with control characters.
    pub fn checked_reason(&self) -> Result<Option<&str>, String> {
        match &self.reason {
            None => Ok(None),
            Some(r) => Self::checked(r),
        }
    }

    /// `reason` trimmed, or why it cannot be one (see [`CancelRequest::checked_reason`]).
    pub(crate) fn checked(reason: &str) -> Result<Option<&str>, String> {
        let r = reason.trim();
        if r.is_empty() || r.chars().count() > MAX_CANCEL_REASON_CHARS || r.chars().any(char::is_control) {
            return Err(format!(
                "must be 1-{MAX_CANCEL_REASON_CHARS} characters, no control characters"
            ));
        }
        Ok(Some(r))
    }

    /// A request whose reason is `text` made acceptable: control characters (a newline in an
    /// error it quotes) become spaces, and a reason longer than the server takes is cut with
    /// "…". For reasons a program writes; a person's own words are better refused than cut.
    pub fn fitted(text: &str) -> Self {
        let clean: String = text
            .trim()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let reason = crate::render::clip(&clean, MAX_CANCEL_REASON_CHARS);
        Self {
            reason: (!reason.trim().is_empty()).then_some(reason),
        }
    }
}

/// `POST /v1/tasks/{id}/retry`: the task queued again, and the dependents that had failed
/// `DEPENDENCY_FAILED` because of it and are queued again with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retried {
    #[serde(flatten)]
    pub task: Task,
    /// In the order they were re-queued; empty when none had failed because of this task.
    #[serde(default)]
    pub requeued_dependents: Vec<TaskId>,
}

/// `POST /v1/tasks` with several tasks: all are enqueued in one transaction, or none.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BatchSubmit {
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::protocol::openapi::TaskSpecSchema>))]
    pub tasks: Vec<TaskSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchSubmitted {
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::protocol::openapi::EnqueuedSchema>))]
    pub tasks: Vec<Enqueued>,
}

/// A page of tasks, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskPage {
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::protocol::openapi::TaskSchema>))]
    pub tasks: Vec<Task>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub next_cursor: Option<TaskId>,
}

/// Query parameters of `GET /v1/tasks` (and of a project's builds).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct TaskListQuery {
    /// queued, running, succeeded, failed or canceled.
    pub state: Option<String>,
    pub project: Option<String>,
    /// `key=value`.
    pub label: Option<String>,
    pub worker: Option<String>,
    /// An agent's name (`command` for command tasks): the tasks that need it. An agent task
    /// that names no agent (any worker's default) matches none.
    pub agent: Option<String>,
    /// An error class (e.g. `AUTH_FAILED`): the tasks whose last attempt ended with it — failed
    /// with it, or queued to retry after it.
    pub class: Option<String>,
    /// A schedule's name: the tasks it submitted (docs/schedules.md).
    pub schedule: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1-500, default 50.
    pub limit: Option<u32>,
}

/// Query parameters of `GET /v1/tasks/{id}/events`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Return events with `seq` greater than this (default 0).
    pub after: Option<i64>,
    /// 1-1000, default 100.
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventPage {
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::protocol::openapi::EventSchema>))]
    pub events: Vec<Event>,
    /// Pass as `after` for the next page (the last `seq` returned, or the `after` given).
    pub next_after: i64,
}

#[cfg(test)]
mod tests {
    use super::{CancelRequest, MAX_CANCEL_REASON_CHARS};

    #[test]
    fn a_fitted_reason_is_one_line_within_the_limit() {
        let r = CancelRequest::fitted("  git failed:\nexit 128\t ").reason;
        assert_eq!(r.as_deref(), Some("git failed: exit 128"));
        let long = CancelRequest::fitted(&"é".repeat(MAX_CANCEL_REASON_CHARS + 10))
            .reason
            .expect("a reason");
        assert_eq!(long.chars().count(), MAX_CANCEL_REASON_CHARS);
        assert!(long.ends_with("é…"), "{long}");
        let exact = "x".repeat(MAX_CANCEL_REASON_CHARS);
        assert_eq!(CancelRequest::fitted(&exact).reason, Some(exact));
        assert_eq!(CancelRequest::fitted(" \n ").reason, None);
    }
}
