//! Whether the model's provider refuses this worker's own key for an agent: a short run of that
//! agent with the worker's own environment and nothing a task chose, which decides whether a
//! task's refused key counts against the worker.
//!
//! Why a run and not a look at the task: a task can send its agent elsewhere in more ways than
//! anyone can list — a profile's variables (`ANTHROPIC_BASE_URL`, `OPENCODE_CONFIG_CONTENT`, a
//! proxy), the repository's own agent settings (`.claude/settings.json`, `opencode.json`,
//! `.env`), or a prompt that has the agent rewrite its settings while it runs. An endpoint the
//! task chose that answers 401 says nothing about the worker's key; counting it would let
//! anyone who may submit a task stop every worker. The run here has none of that: an empty
//! directory, a fresh home, the worker's variables, no profile. It costs one short request, and
//! only after a refusal.

use std::sync::Arc;
use std::time::Duration;

use agentpool_agents::{AgentRequest, EventSink};
use agentpool_core::{ErrorClass, NewEvent, TaskId};
use tokio_util::sync::CancellationToken;

use crate::pipeline::Pipeline;
use crate::private::PrivateDir;

/// How long the check's run may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(90);

/// What the check asks: anything the model answers will do.
const CHECK_PROMPT: &str = "Reply with the single word OK.";

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OwnKey {
    /// Refused again, with nothing of the task's: the worker's key is bad.
    Refused,
    /// Not refused (answered, or failed some other way: down, rate limited, not started):
    /// the refusal came from what the task chose, or cannot be pinned on the worker.
    NotRefused(String),
}

/// Events of the check's run go nowhere: it belongs to no task.
struct Discard;

impl EventSink for Discard {
    fn emit(&self, _: NewEvent) {}
}

/// Run `agent` (with `model`, the one the refused run asked for) once with this worker's own
/// environment and login and nothing else; `task` names the record its process is kept under
/// while it runs (a worker killed meanwhile stops it when it starts again).
pub(crate) async fn check(pipeline: &Pipeline, agent: &str, model: Option<String>, task: TaskId) -> OwnKey {
    let Some(a) = pipeline.agents().get(agent) else {
        return OwnKey::NotRefused(format!("agent {agent} is not offered"));
    };
    let cfg = pipeline.config();
    let dir = match PrivateDir::create(&cfg.workspace.root) {
        Ok(d) => d,
        Err(e) => return OwnKey::NotRefused(format!("cannot create a directory for the check: {e}")),
    };
    let (workdir, home) = (dir.path().join("work"), dir.path().join("home"));
    for d in [&workdir, &home] {
        if let Err(e) = std::fs::create_dir_all(d) {
            return OwnKey::NotRefused(format!("cannot create {}: {e}", d.display()));
        }
    }
    let mut req = AgentRequest::new(CHECK_PROMPT, workdir, home);
    req.model = model;
    req.max_turns = Some(1);
    req.timeout = CHECK_TIMEOUT;
    req.max_output_bytes = 1024 * 1024;
    req.env = cfg
        .extra_env
        .iter()
        .chain(&cfg.secret_env)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    req.local_login = cfg.local_logins.get(agent).cloned();
    req.record = Some(pipeline.group_record(task));
    let sink: Arc<dyn EventSink> = Arc::new(Discard);
    let found = match a.run(req, sink, CancellationToken::new()).await {
        Ok(o) if o.is_error && o.error_class == Some(ErrorClass::AuthFailed) => OwnKey::Refused,
        Ok(o) if o.is_error => OwnKey::NotRefused(
            o.error_message
                .unwrap_or_else(|| "the agent reported an error".into()),
        ),
        Ok(_) => OwnKey::NotRefused("the agent answered".into()),
        // Not started (no key at all, say): no provider refused anything.
        Err(e) => OwnKey::NotRefused(e.to_string()),
    };
    dir.remove().await;
    found
}
