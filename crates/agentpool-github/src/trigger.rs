//! Which webhook events become tasks: the pure decision from an event, the project's settings
//! and what agentpool knows about the pull request involved. The caller does the I/O (looking
//! the pull request up, enqueueing, recording the link).

use std::collections::BTreeMap;

use agentpool_core::TaskId;
use agentpool_core::github::GithubSettings;

use crate::client::ReviewComment;
use crate::payload::Envelope;
use crate::template::{self, DEFAULT_FOLLOW_UP, DEFAULT_PROMPT};

/// What started a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerKind {
    Label,
    Command,
    Review,
    ReviewComment,
    CheckRun,
}

impl TriggerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Label => "label",
            TriggerKind::Command => "command",
            TriggerKind::Review => "review",
            TriggerKind::ReviewComment => "review_comment",
            TriggerKind::CheckRun => "check_run",
        }
    }
}

/// A pull request agentpool opened, as recorded when it opened it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedPr {
    pub branch: String,
    /// The latest task whose work went into it (its session is resumed).
    pub last_task: TaskId,
    /// Automatic follow-ups (reviews and failed check runs) it already had.
    pub automatic_follow_ups: u32,
    /// Closed or merged (and not reopened) since: it takes no more follow-ups.
    pub closed: bool,
}

/// A task to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub kind: TriggerKind,
    /// The issue or pull request the status comment goes on.
    pub number: u64,
    pub title: String,
    pub prompt: String,
    /// One per triggering event: the same event delivered twice starts one task.
    pub idempotency_key: String,
    /// Set when the task continues a pull request agentpool opened: its branch and the task
    /// whose session to resume.
    pub follow_up: Option<OpenedPr>,
}

/// What an event asks for: a task to start, the unfinished tasks of an issue or pull request
/// to stop, or nothing (with why: answered to GitHub and logged, never stored).
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Start(Box<Trigger>),
    /// Cancel the queued and running tasks started from issue or pull request `number` (or
    /// working on that pull request): it was closed, its label removed, or a `/agentpool
    /// cancel` command asked.
    Stop {
        number: u64,
        /// What happened, and who did it when the event says ("the issue was closed by
        /// @octocat"): kept in each canceled task's message.
        reason: String,
    },
    Ignore(&'static str),
}

/// The placeholders a prompt template may use (docs/github.md lists them).
pub const KNOWN_PLACEHOLDERS: [&str; 8] = [
    "repository",
    "number",
    "title",
    "body",
    "url",
    "comment",
    "review",
    "check",
];

/// Why an event about a pull request agentpool opened starts nothing once it is closed: work
/// on it would open a second pull request for the same branch.
const CLOSED: &str = "the pull request is closed";

/// The words that, alone after the command (`/agentpool cancel`), stop work instead of
/// starting it.
const STOP_WORDS: [&str; 2] = ["cancel", "stop"];

/// The pull request a follow-up event is about, when the event can be one: the caller looks
/// it up and passes what it finds to [`decide`].
pub fn pull_request_of(event: &str, env: &Envelope) -> Option<u64> {
    match event {
        "pull_request" | "pull_request_review" | "pull_request_review_comment" => {
            env.pull_request.as_ref().map(|p| p.number)
        }
        "issue_comment" => env
            .issue
            .as_ref()
            .filter(|i| i.pull_request.is_some())
            .map(|i| i.number),
        "check_run" => env
            .check_run
            .as_ref()
            .and_then(|c| c.pull_requests.first())
            .map(|p| p.number),
        _ => None,
    }
}

/// The review a review or review comment event belongs to (pull request, review id), when it
/// can start a follow-up: the caller reads the review's comments ([`decide`]'s `review`).
pub fn review_of(event: &str, env: &Envelope) -> Option<(u64, u64)> {
    let pr = env.pull_request.as_ref()?.number;
    match event {
        "pull_request_review" => env.review.as_ref().map(|r| (pr, r.id)),
        "pull_request_review_comment" => env
            .comment
            .as_ref()
            .and_then(|c| c.pull_request_review_id)
            .map(|id| (pr, id)),
        _ => None,
    }
}

/// Decide what `event` (the `X-GitHub-Event` header) with payload `env` starts. `opened` is
/// the pull request of [`pull_request_of`] if agentpool opened it; `review` the comments of
/// the review of [`review_of`], as far as they could be read.
pub fn decide(
    event: &str,
    env: &Envelope,
    settings: &GithubSettings,
    opened: Option<OpenedPr>,
    review: &[ReviewComment],
) -> Decision {
    let repository = env
        .repository
        .as_ref()
        .map(|r| r.full_name.clone())
        .unwrap_or_default();
    // Every placeholder the templates know, empty until the event fills it: a follow-up from
    // a review has no check run to quote, and a template must not show `{{check}}` for it.
    let mut vars: BTreeMap<&str, String> = KNOWN_PLACEHOLDERS.iter().map(|k| (*k, String::new())).collect();
    vars.insert("repository", repository.clone());
    let action = env.action.as_deref().unwrap_or("");
    // What stopped the work, with who did it when the event says.
    let stop = |number: u64, what: &str| Decision::Stop {
        number,
        reason: match &env.sender {
            Some(s) => format!("{what} by @{}", s.login),
            None => what.to_string(),
        },
    };
    match event {
        "issues" if action == "closed" => match &env.issue {
            Some(issue) => stop(issue.number, "the issue was closed"),
            None => Decision::Ignore("no issue in the event"),
        },
        "pull_request" => match (&env.pull_request, action, opened) {
            (Some(pr), "closed", Some(_)) => stop(pr.number, "the pull request was closed"),
            (Some(_), "closed", None) => Decision::Ignore("not a pull request agentpool opened"),
            _ => Decision::Ignore("only a closed pull request stops work"),
        },
        "issues" => {
            let (Some(issue), Some(label)) = (&env.issue, &env.label) else {
                return Decision::Ignore("not an issue label event");
            };
            if label.name != settings.label() {
                return Decision::Ignore("not the configured label");
            }
            if action == "unlabeled" {
                return stop(issue.number, "the label was removed");
            }
            if action != "labeled" {
                return Decision::Ignore("not a label added or removed");
            }
            issue_vars(&mut vars, issue, "");
            let prompt = render(settings.prompt_template.as_deref(), DEFAULT_PROMPT, &vars);
            Decision::Start(Box::new(Trigger {
                kind: TriggerKind::Label,
                number: issue.number,
                title: issue.title.clone(),
                prompt,
                // A label removed and added again is a new request: the label event has no id
                // of its own, so the issue's `updated_at` (which the label change set) tells
                // the two apart while a redelivery of either keeps it.
                idempotency_key: format!(
                    "github:{repository}:issue:{}:label:{}:{}",
                    issue.number,
                    label.name,
                    updated_at(env)
                ),
                follow_up: None,
            }))
        }
        "issue_comment" => {
            let (Some(issue), Some(comment)) = (&env.issue, &env.comment) else {
                return Decision::Ignore("not an issue comment event");
            };
            if action != "created" {
                return Decision::Ignore("only new comments are commands");
            }
            let Some(request) = command_text(comment.body.as_deref().unwrap_or(""), settings.command())
            else {
                return Decision::Ignore("not a command");
            };
            if !settings.allows(&comment.author_association) {
                return Decision::Ignore("the commenter is not allowed to command agentpool");
            }
            if STOP_WORDS.iter().any(|w| request.eq_ignore_ascii_case(w)) {
                return stop(issue.number, "a cancel command");
            }
            if opened
                .as_ref()
                .is_some_and(|o| o.closed || is_closed(&issue.state))
            {
                return Decision::Ignore(CLOSED);
            }
            issue_vars(&mut vars, issue, &request);
            let (template, default) = match &opened {
                Some(_) => (settings.follow_up_template.as_deref(), DEFAULT_FOLLOW_UP),
                None => (settings.prompt_template.as_deref(), DEFAULT_PROMPT),
            };
            vars.insert("review", request.clone());
            let prompt = render(template, default, &vars);
            Decision::Start(Box::new(Trigger {
                kind: TriggerKind::Command,
                number: issue.number,
                title: issue.title.clone(),
                prompt,
                idempotency_key: format!("github:{repository}:comment:{}", comment.id),
                follow_up: opened,
            }))
        }
        "pull_request_review" | "pull_request_review_comment" => {
            let Some(pr) = &env.pull_request else {
                return Decision::Ignore("no pull request in the event");
            };
            if !settings.review_follow_ups {
                return Decision::Ignore("review follow-ups are off for this project");
            }
            let Some(opened) = opened else {
                return Decision::Ignore("not a pull request agentpool opened");
            };
            if opened.closed || is_closed(&pr.state) {
                return Decision::Ignore(CLOSED);
            }
            if opened.automatic_follow_ups >= settings.max_follow_ups() {
                return Decision::Ignore("this pull request reached its limit of automatic follow-ups");
            }
            // A review with N comments arrives as one review event and N comment events; all
            // of them are one request, so they share one key (the review's) and one prompt
            // (the review and every comment of it), whichever arrives first.
            let (kind, association, mut feedback, key, own) = if event == "pull_request_review" {
                let Some(r) = &env.review else {
                    return Decision::Ignore("no review in the event");
                };
                if action != "submitted" {
                    return Decision::Ignore("only submitted reviews start follow-ups");
                }
                let body = r.body.clone().unwrap_or_default();
                if review.is_empty() && (r.state.eq_ignore_ascii_case("approved") || body.trim().is_empty()) {
                    return Decision::Ignore("the review asks for nothing");
                }
                let text = if body.trim().is_empty() {
                    String::new()
                } else {
                    format!("Review ({}):\n{body}\n", r.state)
                };
                (
                    TriggerKind::Review,
                    r.author_association.clone(),
                    text,
                    format!("github:{repository}:review:{}", r.id),
                    None,
                )
            } else {
                let Some(c) = &env.comment else {
                    return Decision::Ignore("no comment in the event");
                };
                if action != "created" {
                    return Decision::Ignore("only new review comments start follow-ups");
                }
                let key = match c.pull_request_review_id {
                    Some(id) => format!("github:{repository}:review:{id}"),
                    None => format!("github:{repository}:review-comment:{}", c.id),
                };
                let own = ReviewComment {
                    id: c.id,
                    body: c.body.clone().unwrap_or_default(),
                    path: c.path.clone(),
                    line: c.line,
                    original_line: c.original_line,
                };
                (
                    TriggerKind::ReviewComment,
                    c.author_association.clone(),
                    String::new(),
                    key,
                    Some(own),
                )
            };
            for c in own.iter().chain(
                review
                    .iter()
                    .filter(|r| own.as_ref().is_none_or(|o| o.id != r.id)),
            ) {
                let place = match (&c.path, c.line.or(c.original_line)) {
                    (Some(p), Some(l)) => format!("{p}:{l}"),
                    (Some(p), None) => p.clone(),
                    _ => "the pull request".to_string(),
                };
                feedback.push_str(&format!("Review comment on {place}:\n{}\n", c.body));
            }
            if !settings.allows(&association) {
                return Decision::Ignore("the reviewer is not allowed to command agentpool");
            }
            vars.insert("number", pr.number.to_string());
            vars.insert("title", pr.title.clone());
            vars.insert("body", pr.body.clone().unwrap_or_default());
            vars.insert("url", pr.html_url.clone().unwrap_or_default());
            vars.insert("review", feedback);
            let prompt = render(settings.follow_up_template.as_deref(), DEFAULT_FOLLOW_UP, &vars);
            Decision::Start(Box::new(Trigger {
                kind,
                number: pr.number,
                title: pr.title.clone(),
                prompt,
                idempotency_key: key,
                follow_up: Some(opened),
            }))
        }
        "check_run" => {
            let Some(run) = &env.check_run else {
                return Decision::Ignore("no check run in the event");
            };
            if !settings.check_run_follow_ups {
                return Decision::Ignore("check run follow-ups are off for this project");
            }
            let failed = matches!(
                run.conclusion.as_deref(),
                Some("failure" | "timed_out" | "action_required")
            );
            if action != "completed" || !failed {
                return Decision::Ignore("not a failed check run");
            }
            let Some(opened) = opened else {
                return Decision::Ignore("not a pull request agentpool opened");
            };
            // A check run's event does not say whether its pull request is still open: what
            // agentpool recorded of its `pull_request` events does.
            if opened.closed {
                return Decision::Ignore(CLOSED);
            }
            if opened.automatic_follow_ups >= settings.max_follow_ups() {
                return Decision::Ignore("this pull request reached its limit of automatic follow-ups");
            }
            let number = run.pull_requests.first().map(|p| p.number).unwrap_or_default();
            let output = run.output.clone();
            let check = format!(
                "Check run {:?} failed ({}).\n{}\n{}\n{}",
                run.name,
                run.conclusion.as_deref().unwrap_or(""),
                output.as_ref().and_then(|o| o.title.clone()).unwrap_or_default(),
                output
                    .as_ref()
                    .and_then(|o| o.summary.clone())
                    .unwrap_or_default(),
                run.html_url.clone().unwrap_or_default(),
            );
            vars.insert("number", number.to_string());
            vars.insert("check", check);
            vars.insert("title", format!("check {}", run.name));
            let prompt = render(settings.follow_up_template.as_deref(), DEFAULT_FOLLOW_UP, &vars);
            Decision::Start(Box::new(Trigger {
                kind: TriggerKind::CheckRun,
                number,
                title: format!("check run {}", run.name),
                prompt,
                idempotency_key: format!("github:{repository}:check-run:{}:{}", run.id, run.head_sha),
                follow_up: Some(opened),
            }))
        }
        _ => Decision::Ignore("event not handled"),
    }
}

fn render(custom: Option<&str>, default: &str, vars: &BTreeMap<&str, String>) -> String {
    template::render(custom.unwrap_or(default), vars)
}

/// Whether an issue's or pull request's `state` in an event says it is closed (merged pull
/// requests are closed too).
fn is_closed(state: &Option<String>) -> bool {
    state.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("closed"))
}

fn issue_vars(vars: &mut BTreeMap<&str, String>, issue: &crate::payload::Issue, comment: &str) {
    vars.insert("number", issue.number.to_string());
    vars.insert("title", issue.title.clone());
    vars.insert("body", issue.body.clone().unwrap_or_default());
    vars.insert("url", issue.html_url.clone().unwrap_or_default());
    vars.insert("comment", comment.to_string());
}

fn updated_at(env: &Envelope) -> String {
    env.issue
        .as_ref()
        .and_then(|i| i.updated_at.clone())
        .unwrap_or_default()
}

/// The request after `command` when `body` starts with it (`/agentpool fix the test` →
/// `fix the test`); `None` when it does not, or nothing follows.
pub fn command_text(body: &str, command: &str) -> Option<String> {
    let rest = body.trim_start().strip_prefix(command)?;
    if !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
        return None;
    }
    let rest = rest.trim();
    (!rest.is_empty()).then(|| rest.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_must_be_the_first_word_and_carry_a_request() {
        assert_eq!(
            command_text("  /agentpool fix it\nplease", "/agentpool").as_deref(),
            Some("fix it\nplease")
        );
        assert_eq!(command_text("/agentpoolx fix", "/agentpool"), None);
        assert_eq!(command_text("/agentpool   ", "/agentpool"), None);
        assert_eq!(command_text("please /agentpool fix", "/agentpool"), None);
    }
}
