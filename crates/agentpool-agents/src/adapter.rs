//! The run skeleton every agent-CLI adapter shares: validate, find the CLI, check that it can
//! authenticate (with the user's local login when allowed), let the adapter write its home and
//! pick flags/env, put back a kept session, run (reporting only the run's own figures when the
//! CLI counts a resumed session's earlier runs in, see [`kept`]), keep the session
//! for follow-ups. Each adapter module supplies only what is specific to its CLI ([`CliAgent`]).

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::auth::AuthNeeds;
use crate::cli::{self, AgentConfig, CliRun, LineParser};
use crate::events;
use crate::kept::{self, Baseline, RunningTotals, Totals};
use crate::{AgentError, AgentOutcome, AgentRequest, Capabilities, CodeAgent, EventSink};

/// An agent driven through its CLI; [`Configured`] makes it a [`CodeAgent`].
pub trait CliAgent: Send + Sync {
    /// The CLI's executable.
    const EXE: &'static str;
    /// The npm package the CLI comes in.
    const PACKAGE: &'static str;
    const CAPABILITIES: Capabilities;
    /// The agent's name (as tasks name it).
    const NAME: &'static str = Self::CAPABILITIES.name;
    type Parser: LineParser + Default + 'static;
    /// Which of the figures the CLI reports are running totals over a resumed session; the
    /// skeleton subtracts what they were when the session was kept.
    const RUNNING_TOTALS: RunningTotals = RunningTotals::NONE;

    /// Checks beyond [`cli::validate_common`]; the default has none.
    fn validate_request(&self, request: &AgentRequest) -> Result<(), AgentError> {
        cli::validate_common(request, "prompt")
    }

    /// What the CLI needs to authenticate for `request`, checked before it starts; the
    /// default needs nothing.
    fn auth_needs(&self, _request: &AgentRequest) -> AuthNeeds {
        AuthNeeds::any_of([])
    }

    /// Write the CLI's config into `request.home` and choose its arguments and the variables
    /// it needs.
    fn prepare(&self, request: &AgentRequest, events: &dyn EventSink) -> Result<Prepared, AgentError>;
}

/// What an adapter hands the skeleton for one run.
pub struct Prepared {
    pub args: Vec<OsString>,
    /// The CLI's own switches (config paths, telemetry and update off), set over the private
    /// home's variables and under the request's own ([`cli::agent_env`]).
    pub env: Vec<(&'static str, String)>,
    /// How the CLI's session files are carried across homes; `None`: they are not.
    pub sessions: Option<Box<dyn SessionFiles>>,
}

/// Carries a CLI's session files between this run's throw-away home and the kept directory
/// ([`AgentConfig::sessions_of`]), so a follow-up in a fresh home can resume.
pub trait SessionFiles: Send + Sync {
    /// What the CLI calls a session, for the warning when one cannot be kept.
    fn noun(&self) -> &'static str {
        "session"
    }
    /// Put the kept session `id` where the CLI looks for it: whether it is there now (put
    /// back, or there already, as in a feedback round's home). `false` when no copy of it is
    /// kept here: the run it came from ran on another worker, or the copy was removed.
    fn restore(&self, kept: &Path, id: &str) -> bool;
    /// Copy the session `id` out of this run's home.
    fn keep(&self, kept: &Path, id: &str) -> std::io::Result<()>;
}

/// A [`CliAgent`] with the configuration it runs under: the [`CodeAgent`] a registry holds.
pub struct Configured<T> {
    agent: T,
    cfg: AgentConfig,
}

impl<T: CliAgent> Configured<T> {
    pub fn new(agent: T, cfg: AgentConfig) -> Self {
        Self { agent, cfg }
    }
}

#[async_trait]
impl<T: CliAgent> CodeAgent for Configured<T> {
    fn capabilities(&self) -> Capabilities {
        T::CAPABILITIES
    }

    fn validate(&self, request: &AgentRequest) -> Result<(), AgentError> {
        self.agent.validate_request(request)
    }

    async fn version(&self) -> Option<String> {
        crate::version_of(&self.cfg, T::NAME, T::EXE).await
    }

    fn installed(&self) -> bool {
        // An explicit override is found whether or not it is there.
        self.program().is_some_and(|p| crate::cli::is_executable(&p))
    }

    fn program(&self) -> Option<std::path::PathBuf> {
        self.cfg.find(T::NAME, T::EXE)
    }

    fn install_hint(&self) -> Option<String> {
        Some(format!("npm install -g {}", T::PACKAGE))
    }

    async fn run(
        &self,
        request: AgentRequest,
        events: Arc<dyn EventSink>,
        cancel: CancellationToken,
    ) -> Result<AgentOutcome, AgentError> {
        self.agent.validate_request(&request)?;
        let program = self
            .cfg
            .find(T::NAME, T::EXE)
            .ok_or_else(|| AgentError::NotInstalled(T::EXE.into()))?;
        let borrowed = match &request.local_login {
            Some(user_home) => crate::login::bring_in(T::NAME, user_home, &request.home)?,
            None => crate::login::Borrowed::default(),
        };
        self.agent.auth_needs(&request).check(T::NAME, &request)?;
        let root = self.cfg.sessions_of(T::NAME);
        let (request, Prepared { args, env, sessions }, base) =
            self.prepare_resuming(request, &root, events.as_ref())?;
        let resumed = request.resume_session.clone();
        let env = cli::agent_env(&self.cfg, &request, &env)?;
        let baseline = Baseline::new(T::RUNNING_TOTALS, resumed.as_deref(), base).map(Arc::new);
        let sink = match &baseline {
            Some(b) => b.sink(events.clone()),
            None => events.clone(),
        };
        let keep_in = kept::slot(&root, request.keep_as.as_deref());
        let run = CliRun {
            program,
            args,
            env,
            request,
            secrets: borrowed.secrets(),
        };
        let parser = Box::new(T::Parser::default());
        let outcome = cli::run_cli(run, parser, sink, cancel).await;
        // Whatever the outcome: a token the CLI refreshed must not be lost with its home.
        borrowed.give_back(events.as_ref());
        let mut outcome = outcome?;
        if let (Some(files), Some(id)) = (&sessions, &outcome.session_id) {
            // The session's totals as the CLI reported them, for a run that resumes this copy.
            let same = resumed.as_deref() == Some(id.as_str());
            let totals = Totals::of(&outcome).after(base.as_ref().filter(|_| same));
            if let Err(e) = files.keep(&keep_in, id).and_then(|()| totals.write(&keep_in, id)) {
                let noun = files.noun();
                events.emit(events::log(
                    "agentpool",
                    &format!("could not keep {noun} {id} for follow-ups: {e}"),
                ));
            }
        }
        if sessions.is_some() {
            // One copy is kept per task: now and then (at most hourly, a directory listing),
            // those past their time go.
            let keep_for = self.cfg.keep_sessions_for.unwrap_or(kept::DEFAULT_KEEP_FOR);
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(n @ 1..) = kept::prune_now_and_then(&root, keep_for) {
                    tracing::info!(
                        agent = T::NAME,
                        removed = n,
                        days = keep_for.as_secs() / 86_400,
                        "removed kept sessions not written for the days kept"
                    );
                }
            })
            .await;
        }
        if let Some(b) = &baseline {
            b.apply(&mut outcome);
        }
        Ok(outcome)
    }
}

impl<T: CliAgent> Configured<T> {
    /// Prepare the run, with the session it resumes put back into its home first, and what the
    /// CLI had reported when that session was kept. A session with no copy kept on this worker
    /// (a follow-up of a task another worker or pod ran) cannot be resumed: the CLI would fail
    /// every attempt ("No conversation found"), so the run is a new session, told that it
    /// continues earlier work, which it finds in the workspace and its history.
    fn prepare_resuming(
        &self,
        request: AgentRequest,
        root: &Path,
        events: &dyn EventSink,
    ) -> Result<(AgentRequest, Prepared, Option<Totals>), AgentError> {
        let Some(id) = request.resume_session.clone() else {
            let prepared = self.agent.prepare(&request, events)?;
            return Ok((request, prepared, None));
        };
        let from = kept::restore_slot(root, &request);
        let base = Totals::read(&from, &id);
        // A CLI that holds itself to a cost limit counts a resumed session's running total
        // against it: its limit is raised by what the session had cost, so the run may spend
        // what the task's limit allows.
        let mut resuming = request.clone();
        if T::RUNNING_TOTALS.cost
            && let (Some(limit), Some(before)) = (request.max_cost_usd, base.and_then(|b| b.cost_usd))
        {
            resuming.max_cost_usd = Some(limit + before);
        }
        // What the adapter says as it prepares is held until it is known which preparation
        // the run goes on with, so that it is said once.
        let said = Held::default();
        let prepared = self.agent.prepare(&resuming, &said)?;
        match &prepared.sessions {
            Some(files) if !files.restore(&from, &id) => {
                let noun = files.noun();
                events.emit(events::log(
                    "agentpool",
                    &format!(
                        "{} cannot resume {noun} {id}: no copy of it is kept on this worker (the task \
                         it follows ran on another, or the copy was removed); it starts a new {noun}",
                        T::NAME
                    ),
                ));
                let fresh = request.as_new_session();
                let prepared = self.agent.prepare(&fresh, events)?;
                Ok((fresh, prepared, None))
            }
            _ => {
                said.pass_to(events);
                Ok((resuming, prepared, base))
            }
        }
    }
}

/// Events held back, to be passed on or dropped.
#[derive(Default)]
struct Held(std::sync::Mutex<Vec<agentpool_core::NewEvent>>);

impl Held {
    fn pass_to(self, events: &dyn EventSink) {
        for e in self.0.into_inner().unwrap_or_else(|e| e.into_inner()) {
            events.emit(e);
        }
    }
}

impl EventSink for Held {
    fn emit(&self, event: agentpool_core::NewEvent) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(event);
    }
}

/// Tell the run that `max_turns` has no effect on a CLI without such a setting (`what`: how
/// the CLI would take it, "flag" or "option").
pub fn note_max_turns_ignored(request: &AgentRequest, events: &dyn EventSink, agent: &str, what: &str) {
    if request.max_turns.is_some() {
        events.emit(events::log(
            "agentpool",
            &format!("{agent} has no max-turns {what}; max_turns is ignored"),
        ));
    }
}

/// Tell the run which of its profile's settings `agent` has no way to take (`append` for the
/// appended system prompt, `tools` for allowed tools).
pub fn note_profile_ignored(
    request: &AgentRequest,
    events: &dyn EventSink,
    agent: &str,
    append: bool,
    tools: bool,
) {
    let p = &request.profile;
    let mut ignored = Vec::new();
    if append && p.append_system_prompt.is_some() {
        ignored.push("append_system_prompt");
    }
    if tools && !p.allowed_tools.is_empty() {
        ignored.push("allowed_tools");
    }
    if !ignored.is_empty() {
        events.emit(events::log(
            "agentpool",
            &format!(
                "{agent} has no such setting; the profile's {} is ignored",
                ignored.join(" and ")
            ),
        ));
    }
}

/// The profile's MCP servers as the `mcpServers` object most CLIs read (command, args, env).
pub fn mcp_servers_json(request: &AgentRequest) -> Value {
    let entries: serde_json::Map<String, Value> = request
        .profile
        .mcp_servers
        .iter()
        .map(|(name, s)| {
            let v = serde_json::json!({ "command": s.command, "args": s.args, "env": s.env });
            (name.clone(), v)
        })
        .collect();
    Value::Object(entries)
}

/// Write `value` as pretty JSON (a CLI's settings file).
pub fn write_json(path: &Path, value: &Value) -> Result<(), AgentError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| AgentError::Io(std::io::Error::other(e)))?;
    std::fs::write(path, bytes)?;
    Ok(())
}

/// A session id safe to use in a file name: non-empty, only ASCII alphanumerics, `-` and `_`.
/// Ids come from the CLI or a validated request; anything path-like is refused regardless.
pub fn plain_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
