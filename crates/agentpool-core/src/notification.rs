//! Notifications: a named HTTP endpoint told of every task that ends (a chat hook, a CI job
//! waiting on agents, a ticket system). What a notification is, the rules of its fields, and
//! what one delivery to it records; the server finds the finished tasks and delivers them
//! (docs/notifications.md).

use serde::{Deserialize, Serialize};

use crate::{Labels, TaskId, TaskState, Timestamp, ValidationError};

/// The longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// The shape of what is POSTed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// `DeliveryBody`: the event, the delivery id and the whole task.
    #[default]
    Json,
    /// `{"text": "…"}`, one line about the task: what Slack's incoming webhooks take, and
    /// Mattermost's and Rocket.Chat's, and Discord's `…/slack` webhook URLs.
    Slack,
}

crate::enum_names!(Format, UnknownFormat("notification format") {
    Json => "json",
    Slack => "slack",
});

/// A notification as set (`PUT /v1/notifications/{name}`'s body).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NotificationSpec {
    /// Where each delivery is POSTed: an `http` or `https` URL without user or password.
    pub url: String,
    /// The end states it is told of: any of `succeeded`, `failed`, `canceled`; every end state
    /// when empty or absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub on: Vec<TaskState>,
    /// Only tasks of this project; tasks of every project (and of none) when absent.
    pub project: Option<String>,
    /// Only tasks whose labels include all of these (`{"team": "infra"}`); any task when empty.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::BTreeMap<String, String>))]
    pub labels: Labels,
    /// A stored credential whose value signs each delivery: the header
    /// `X-Agentpool-Signature-256: sha256=<hex HMAC-SHA256 of the body>`, as GitHub signs
    /// its webhooks.
    pub secret_credential: Option<String>,
    /// `json` (default): the whole task; `slack`: a line of text for a chat channel.
    #[serde(default, skip_serializing_if = "is_json")]
    pub format: Format,
}

fn is_json(f: &Format) -> bool {
    *f == Format::Json
}

impl NotificationSpec {
    /// Every problem with the spec, each naming its field.
    pub fn validate(&self) -> Result<(), Vec<ValidationError>> {
        let mut errs = Vec::new();
        if let Err(why) = check_url(&self.url) {
            errs.push(ValidationError::new("url", why));
        }
        for (i, s) in self.on.iter().enumerate() {
            if !s.is_finished() {
                errs.push(ValidationError::new(
                    format!("on[{i}]"),
                    format!("{s} is not an end state: use succeeded, failed or canceled"),
                ));
            }
        }
        if self
            .project
            .as_ref()
            .is_some_and(|p| p.is_empty() || p.len() > 100)
        {
            errs.push(ValidationError::new("project", "must be 1-100 characters"));
        }
        errs.extend(crate::spec::validate_labels(&self.labels));
        if let Some(c) = &self.secret_credential
            && !crate::project::valid_credential_name(c)
        {
            errs.push(ValidationError::new(
                "secret_credential",
                "use 1-100 characters from [A-Za-z0-9._-]",
            ));
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    /// Which task ends it is told of, in words: "failed and canceled tasks of project web
    /// labelled team=infra", "every task that ends". Not its URL, which may hold the endpoint's secret.
    pub fn describe(&self) -> String {
        let states = if self.on.is_empty() {
            "every task that ends".to_string()
        } else {
            let names: Vec<&str> = self.on.iter().map(|s| s.as_str()).collect();
            format!("{} tasks", names.join(" and "))
        };
        let mut words = match &self.project {
            Some(p) => format!("{states} of project {p}"),
            None => states,
        };
        if !self.labels.is_empty() {
            let pairs: Vec<String> = self.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            words.push_str(&format!(" labelled {}", pairs.join(",")));
        }
        words
    }

    /// Whether a task that ended in `state` is one this notification is told of.
    pub fn wants(&self, state: TaskState) -> bool {
        state.is_finished() && (self.on.is_empty() || self.on.contains(&state))
    }
}

/// Why `url` cannot be delivered to, if it cannot. Only the shape is checked here; the server
/// parses it fully before storing it.
fn check_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!("must be at most {MAX_URL_LEN} characters"));
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must start with https:// or http://")?;
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".into());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("must not carry a user or password: sign deliveries with secret_credential".into());
    }
    if authority.is_empty() {
        return Err("names no host".into());
    }
    Ok(())
}

/// A stored notification (`GET /v1/notifications/{name}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Notification {
    pub name: String,
    pub spec: NotificationSpec,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: Timestamp,
}

/// `GET /v1/notifications`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NotificationList {
    pub notifications: Vec<Notification>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not yet answered with a 2xx; tried again at `next_attempt_at`.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Every attempt failed; no more are made.
    Failed,
}

crate::enum_names!(DeliveryState, UnknownDeliveryState("delivery state") {
    Pending => "pending",
    Delivered => "delivered",
    Failed => "failed",
});

/// One task's end, told (or being told) to one notification.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Delivery {
    /// Sent as `X-Agentpool-Delivery`, the same on every attempt: a receiver that got it
    /// before can ignore it.
    pub id: i64,
    pub notification: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub task_id: TaskId,
    /// `task.succeeded`, `task.failed` or `task.canceled`.
    pub event: String,
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When it is tried next, while pending.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub next_attempt_at: Option<Timestamp>,
    /// The HTTP status of the last answer, if there was one.
    pub last_status: Option<u16>,
    /// What went wrong the last time, in words ("HTTP 503", "timed out after 10 s").
    pub last_error: Option<String>,
    /// When the task ended.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub finished_at: Timestamp,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: Timestamp,
}

/// Query parameters of `GET /v1/notifications/{name}/deliveries`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// 1-1000, default 100.
    pub limit: Option<u32>,
}

/// `GET /v1/notifications/{name}/deliveries`, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryList {
    pub deliveries: Vec<Delivery>,
}

/// The body of each delivery (`X-Agentpool-Event` carries `event` too).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryBody {
    /// `task.succeeded`, `task.failed` or `task.canceled`.
    pub event: String,
    /// The delivery's id, as in `X-Agentpool-Delivery`.
    pub delivery: i64,
    pub notification: String,
    /// The task as `GET /v1/tasks/{id}` shows it: its spec, state, result or error, and its
    /// attempts (`attempts_detail`).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub task: crate::protocol::TaskDetail,
    /// The task's page on the dashboard, when the server knows its public URL.
    pub url: Option<String>,
}

/// The body of a ping (`POST /v1/notifications/{name}/test`), sent with `X-Agentpool-Event:
/// ping` and no delivery id, signed like a delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PingBody {
    /// `ping`.
    pub event: String,
    pub notification: String,
}

/// How a ping went (`POST /v1/notifications/{name}/test`).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PingResult {
    /// The endpoint answered 2xx.
    pub delivered: bool,
    /// The HTTP status it answered with, if it answered.
    pub status: Option<u16>,
    /// Why it was not delivered, in words (never the URL).
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub took_ms: u64,
}

/// A task's end as one line of Slack text (its markup: `<url|label>` links, `&`, `<` and `>`
/// escaped): "agentpool: task <…|0193ab12> failed (AUTH_FAILED): no key — project web,
/// claude-code".
pub fn chat_text(task: &crate::Task, url: Option<&str>) -> String {
    let id = task.id.to_string();
    let short = &id[..id.len().min(8)];
    let link = match url {
        Some(u) => format!("<{}|{short}>", slack_escape(u)),
        None => format!("`{short}`"),
    };
    let mut line = format!("agentpool: task {link} {}", task.state);
    if let Some(class) = &task.error_class {
        line.push_str(&format!(" ({class})"));
    }
    if let Some(m) = task.error_message.as_deref().and_then(|m| m.lines().next()) {
        line.push_str(&format!(": {}", slack_escape(&crate::render::clip(m, 200))));
    }
    let mut about = Vec::new();
    if let Some(p) = &task.spec.project {
        about.push(format!("project {}", slack_escape(p)));
    }
    about.push(match task.spec.kind {
        crate::TaskKind::Command => "command".to_string(),
        crate::TaskKind::Agent => slack_escape(task.spec.agent.as_deref().unwrap_or("agent")),
    });
    if let Some(r) = &task.result {
        if !r.files.is_empty() {
            let files = crate::render::count(r.files.len(), "file", "files");
            about.push(format!("{files} changed"));
        }
        if let (Some(sha), Some(branch)) = (&r.commit_sha, &r.branch) {
            about.push(format!(
                "{} on {}",
                &sha[..sha.len().min(7)],
                slack_escape(branch)
            ));
        }
        if let Some(cost) = r.cost_usd {
            about.push(format!("${cost:.2}"));
        }
        if let Some(pr) = &r.pull_request {
            about.push(format!("<{}|pull request #{}>", slack_escape(&pr.url), pr.number));
        }
    }
    format!("{line} — {}", about.join(", "))
}

/// `s` with the three characters Slack's text markup reserves escaped.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The event name of a task that ended in `state`.
pub fn event_name(state: TaskState) -> String {
    format!("task.{state}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> NotificationSpec {
        NotificationSpec {
            url: url.into(),
            on: vec![],
            project: None,
            labels: Labels::new(),
            secret_credential: None,
            format: Format::Json,
        }
    }

    fn fields(s: &NotificationSpec) -> Vec<String> {
        s.validate()
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    }

    #[test]
    fn urls_are_http_without_credentials() {
        assert!(spec("https://hooks.example.com/agentpool?x=1").validate().is_ok());
        assert!(spec("http://10.0.0.7:8080/hook").validate().is_ok());
        for (bad, why) in [
            ("ftp://example.com/", "must start with https:// or http://"),
            (
                "https://user:pw@example.com/",
                "must not carry a user or password",
            ),
            ("https:///path", "names no host"),
            ("https://example.com/a b", "must not contain spaces"),
        ] {
            let got = fields(&spec(bad));
            assert!(
                got.len() == 1 && got[0].starts_with("url: ") && got[0].contains(why),
                "{bad}: {got:?}"
            );
        }
        assert_eq!(
            fields(&spec(&format!("https://example.com/{}", "a".repeat(MAX_URL_LEN)))),
            ["url: must be at most 2048 characters"]
        );
    }

    #[test]
    fn every_problem_is_named_by_its_field() {
        let s = NotificationSpec {
            url: "https://example.com/".into(),
            on: vec![TaskState::Failed, TaskState::Running],
            project: Some(String::new()),
            labels: [("team".to_string(), "a b".to_string())].into(),
            secret_credential: Some("has space".into()),
            format: Format::Slack,
        };
        let got = fields(&s);
        let named: Vec<&str> = got
            .iter()
            .map(|e| e.split(':').next().unwrap_or_default())
            .collect();
        assert_eq!(
            named,
            ["on[1]", "project", "labels.team", "secret_credential"],
            "{got:?}"
        );
    }

    #[test]
    fn an_empty_filter_wants_every_end_state() {
        let all = spec("https://example.com/");
        assert!(
            all.wants(TaskState::Succeeded) && all.wants(TaskState::Failed) && all.wants(TaskState::Canceled)
        );
        assert!(!all.wants(TaskState::Running));
        let failed = NotificationSpec {
            on: vec![TaskState::Failed],
            ..all
        };
        assert!(failed.wants(TaskState::Failed) && !failed.wants(TaskState::Succeeded));
        assert_eq!(event_name(TaskState::Canceled), "task.canceled");
        assert_eq!(spec("https://example.com/").describe(), "every task that ends");
        let of_web = NotificationSpec {
            on: vec![TaskState::Failed, TaskState::Canceled],
            project: Some("web".into()),
            labels: [("team".to_string(), "infra".to_string())].into(),
            ..spec("https://example.com/")
        };
        assert_eq!(
            of_web.describe(),
            "failed and canceled tasks of project web labelled team=infra"
        );
    }

    #[test]
    fn a_task_end_is_one_escaped_line_of_chat_text() {
        let now = Timestamp::default();
        let spec = crate::TaskSpec {
            project: Some("web".into()),
            ..crate::TaskSpec::agent("https://example.com/r.git", "claude-code", "fix it")
        };
        let task = crate::Task {
            state: TaskState::Failed,
            attempts: 1,
            started_at: Some(now),
            finished_at: Some(now),
            error_class: Some(crate::ErrorClass::AuthFailed),
            error_message: Some("key <sk-…> refused & gone\nsecond line".into()),
            ..crate::Task::queued(TaskId::new(), spec, 3, now)
        };
        let id = task.id.to_string();
        assert_eq!(
            chat_text(&task, Some("https://ap.example.com/tasks/x?a=1&b=2")),
            format!(
                "agentpool: task <https://ap.example.com/tasks/x?a=1&amp;b=2|{}> failed (AUTH_FAILED): \
                 key &lt;sk-…&gt; refused &amp; gone — project web, claude-code",
                &id[..8],
            )
        );
        let mut done = task.clone();
        done.state = TaskState::Succeeded;
        done.error_class = None;
        done.error_message = None;
        done.spec.kind = crate::TaskKind::Command;
        done.result = Some(crate::TaskResult {
            commit_sha: Some("0123456789abcdef".into()),
            branch: Some("agentpool/fix".into()),
            files: ["a.rs", "b.rs"]
                .map(|p| crate::FileChange::counted(p, Some(1), None))
                .to_vec(),
            cost_usd: Some(0.4249),
            ..crate::TaskResult::default()
        });
        assert_eq!(
            chat_text(&done, None),
            format!(
                "agentpool: task `{}` succeeded — project web, command, 2 files changed, 0123456 on \
                 agentpool/fix, $0.42",
                &id[..8]
            )
        );
    }
}
