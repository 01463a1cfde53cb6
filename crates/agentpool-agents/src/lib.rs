//! Agent adapters: the [`CodeAgent`] trait the worker pipeline calls, a [`Registry`] keyed by
//! agent name, and one module per agent CLI that turns its output into normalized events.
//!
//! Each adapter module has a pure line parser (`Parser`, a [`cli::LineParser`]) and implements
//! [`adapter::CliAgent`] (flags, environment, config files, session files); the run skeleton
//! shared in [`adapter`] runs the CLI through [`process`]: own process group, cleared
//! environment plus a private HOME, stdin from `/dev/null`, SIGTERM→SIGKILL to the group and
//! the agent's whole process tree on cancel/timeout, an output size limit.
//!
//! Resuming (`resume_session`): the CLIs keep sessions in their home, and a follow-up task gets a
//! fresh home and workspace. After each run the Claude Code, Codex and Gemini adapters copy the
//! session's transcript to [`AgentConfig::session_dir`], under the task that ran it
//! ([`AgentRequest::keep_as`]), and put the followed task's copy back where the CLI looks when a
//! later run resumes it ([`AgentRequest::restore_from`]) — so follow-ups resume on the same
//! worker (or any worker sharing that directory), each from the session as the task it follows
//! left it. A resumed run reports only its own tokens and cost ([`kept`]). A follow-up on a
//! worker with no copy of the session (another worker or pod ran the task it follows) starts a
//! new session, told that it continues earlier work ([`AgentRequest::as_new_session`]): the CLI
//! would fail every attempt. OpenCode resumes only within the same home (see its module).

// The product's code returns and reports its failures; only its tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod adapter;
pub mod auth;
pub mod claude_code;
pub mod cli;
pub mod codex;
mod error_text;
pub mod events;
pub mod gemini;
pub mod kept;
pub mod login;
pub mod opencode;
mod probe_home;
pub mod process;

pub use adapter::Configured;
pub use cli::AgentConfig;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agentpool_core::{ErrorClass, NewEvent, Usage};
use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

/// What the pipeline asks an agent to do.
#[derive(Debug, Clone)]
pub struct AgentRequest {
    pub prompt: String,
    /// The prepared git workspace; the agent runs with this as its working directory.
    pub workdir: PathBuf,
    pub model: Option<String>,
    pub max_turns: Option<u32>,
    /// What this run may spend, in USD: given to a CLI that can hold itself to it (Claude
    /// Code's `--max-budget-usd`), which stops its own loop there. The worker still checks the
    /// cost each run reports, for every agent.
    pub max_cost_usd: Option<f64>,
    pub timeout: Duration,
    /// Session to resume (a follow-up task), when the agent supports it.
    pub resume_session: Option<String>,
    /// The name this run's session is kept under for later runs that resume it (its task's
    /// id), so that each task's copy stays as that task left it even though a resumed session
    /// keeps its id. `None`: kept under the session id alone.
    pub keep_as: Option<String>,
    /// Whose kept copy of `resume_session` to resume: the task followed up, or the task itself
    /// for its own feedback rounds. `None`, or a task that kept no copy here: the copy kept
    /// under the session id alone.
    pub restore_from: Option<String>,
    /// Extra environment for the agent (API keys, endpoint URLs). The agent otherwise starts
    /// with a cleared environment.
    pub env: BTreeMap<String, String>,
    /// A private directory the adapter may use as the agent's HOME/config dir.
    pub home: PathBuf,
    /// Stop reading output beyond this many bytes.
    pub max_output_bytes: u64,
    /// The user's home whose login files ([`login::files_of`]) this run may use: copied into
    /// `home` before the CLI starts and written back if it refreshed them. `None`: the agent
    /// sees no login but what the task brings.
    pub local_login: Option<PathBuf>,
    /// The task's agent profile: allowed tools, appended system prompt and MCP servers, which
    /// each adapter writes in its CLI's own format. (Its variables, model and turn limit are
    /// already in `env`, `model` and `max_turns`.)
    pub profile: agentpool_core::AgentProfile,
    /// Record the CLI's process group while it runs, so that a worker restarted after a crash
    /// stops an agent its previous life left running (and paying for tokens).
    pub record: Option<process::GroupRecord>,
}

/// Default output limit: far above any real run, low enough to stop a runaway loop.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 64 * 1024 * 1024;

impl AgentRequest {
    /// A request with defaults: no model, turn limit or resume, the default timeout and output
    /// limit, no extra environment.
    pub fn new(prompt: impl Into<String>, workdir: impl Into<PathBuf>, home: impl Into<PathBuf>) -> Self {
        Self {
            prompt: prompt.into(),
            workdir: workdir.into(),
            model: None,
            max_turns: None,
            max_cost_usd: None,
            timeout: Duration::from_secs(agentpool_core::spec::DEFAULT_TIMEOUT_SECS),
            resume_session: None,
            keep_as: None,
            restore_from: None,
            env: BTreeMap::new(),
            home: home.into(),
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            local_login: None,
            profile: agentpool_core::AgentProfile::default(),
            record: None,
        }
    }

    /// This request as a new session in place of the one it names: told, before its prompt,
    /// that the earlier conversation could not be continued and where the earlier work is.
    pub fn as_new_session(&self) -> Self {
        Self {
            prompt: format!("{NEW_SESSION_PREFACE}\n\n{}", self.prompt),
            resume_session: None,
            restore_from: None,
            ..self.clone()
        }
    }
}

/// What a follow-up that cannot resume its session is told before its prompt: the conversation
/// is gone, the work is not.
pub const NEW_SESSION_PREFACE: &str = "This task follows up an earlier one whose conversation \
could not be continued, so this is a new session: what was done before is in this workspace \
and its git history.";

/// How an agent run ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentOutcome {
    pub final_text: Option<String>,
    pub is_error: bool,
    pub session_id: Option<String>,
    pub num_turns: Option<u32>,
    pub usage: Usage,
    pub cost_usd: Option<f64>,
    pub duration_ms: u64,
    pub exit_code: Option<i32>,
    /// Set when `is_error`: the class decided from the agent's own signals.
    pub error_class: Option<ErrorClass>,
    pub error_message: Option<String>,
    /// A retry-after hint the agent reported (rate limits).
    pub retry_after: Option<Duration>,
}

/// Where an adapter sends normalized events as they happen.
pub trait EventSink: Send + Sync {
    fn emit(&self, event: NewEvent);
}

/// What an adapter reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    pub name: &'static str,
    /// Can continue an earlier session.
    pub resume: bool,
    /// Reports cost in USD.
    pub cost: bool,
    pub max_turns: bool,
}

impl Capabilities {
    /// An agent named `name` that can do none of the optional things; an adapter names what its
    /// CLI can with struct update syntax.
    pub const fn none(name: &'static str) -> Self {
        Self {
            name,
            resume: false,
            cost: false,
            max_turns: false,
        }
    }
}

/// Why a run could not happen at all (as opposed to an agent that ran and failed, which is an
/// [`AgentOutcome`] with `is_error`).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("agent binary not found: {0}")]
    NotInstalled(String),
    /// What the agent's CLI needs to authenticate is missing (see [`auth`]); no retry can help.
    #[error("{0}")]
    NotAuthenticated(String),
    #[error("i/o error running the agent: {0}")]
    Io(#[from] std::io::Error),
    /// The time left for the run was already below the minimum (e.g. a long setup step used
    /// the task's timeout up): the task timed out, it is not malformed.
    #[error("no time left to run the agent (timeout {0:?})")]
    NoTimeLeft(Duration),
}

impl AgentError {
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Invalid(_) => ErrorClass::InvalidTask,
            // The worker offered this agent when it claimed the task: a binary that is gone or
            // cannot be executed is the worker's fault, and another worker may do better.
            Self::NotInstalled(_) => ErrorClass::WorkerError,
            Self::Io(e) if is_spawn_failure(e) => ErrorClass::WorkerError,
            Self::NotAuthenticated(_) => ErrorClass::AuthFailed,
            Self::Io(_) => ErrorClass::AgentError,
            Self::NoTimeLeft(_) => ErrorClass::Timeout,
        }
    }
}

/// Whether an I/O error means a program could not be started at all (missing, or not
/// executable) — a fault of the machine, not of the task.
pub fn is_spawn_failure(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
    )
}

/// An agent CLI driven headlessly.
#[async_trait]
pub trait CodeAgent: Send + Sync {
    fn capabilities(&self) -> Capabilities;
    /// Reject a request that cannot run (prompt missing, timeout out of bounds, malformed model
    /// or session id) before anything starts; `run` calls it too.
    fn validate(&self, request: &AgentRequest) -> Result<(), AgentError> {
        cli::validate_common(request, "prompt")
    }
    /// The installed CLI's version, when it can be found (reported at worker registration).
    async fn version(&self) -> Option<String>;
    /// Whether the agent's CLI can be found where a run looks for it: which agents a worker
    /// offers, and whether one it lost is back.
    fn installed(&self) -> bool {
        true
    }
    /// Where the agent's CLI was found (an explicit override, the bin dir, PATH), when it was.
    fn program(&self) -> Option<std::path::PathBuf> {
        None
    }
    /// How to install the agent's CLI, when one command does it ("npm install -g …").
    fn install_hint(&self) -> Option<String> {
        None
    }
    /// Run to completion, streaming events into `events`. Cancel via `cancel`: the adapter
    /// kills the agent's whole process group and returns an outcome classed `CANCELED`.
    async fn run(
        &self,
        request: AgentRequest,
        events: Arc<dyn EventSink>,
        cancel: CancellationToken,
    ) -> Result<AgentOutcome, AgentError>;
}

/// Agents by name; the first registered is the default.
#[derive(Default, Clone)]
pub struct Registry {
    agents: Vec<(String, Arc<dyn CodeAgent>)>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, agent: Arc<dyn CodeAgent>) {
        let name = agent.capabilities().name.to_string();
        self.agents.retain(|(n, _)| *n != name);
        self.agents.push((name, agent));
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn CodeAgent>> {
        self.agents
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a.clone())
    }

    /// The agent used when a task names none.
    pub fn default_agent(&self) -> Option<Arc<dyn CodeAgent>> {
        self.agents.first().map(|(_, a)| a.clone())
    }

    pub fn names(&self) -> Vec<String> {
        self.agents.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Every shipped adapter; `claude-code` first, so it is the default.
    pub fn builtin(cfg: &AgentConfig) -> Self {
        let mut r = Self::new();
        r.register(Arc::new(Configured::new(claude_code::ClaudeCode, cfg.clone())));
        r.register(Arc::new(Configured::new(codex::Codex, cfg.clone())));
        r.register(Arc::new(Configured::new(opencode::OpenCode, cfg.clone())));
        r.register(Arc::new(Configured::new(gemini::Gemini, cfg.clone())));
        r
    }

    /// The agent for a task: the named one, or the default when none is named; an unknown name
    /// is an invalid task.
    pub fn resolve(&self, name: Option<&str>) -> Result<Arc<dyn CodeAgent>, AgentError> {
        match name {
            Some(n) => self.get(n).ok_or_else(|| {
                AgentError::Invalid(format!(
                    "unknown agent {n:?} (known: {})",
                    self.names().join(", ")
                ))
            }),
            None => self
                .default_agent()
                .ok_or_else(|| AgentError::Invalid("no agent is registered".into())),
        }
    }
}

/// `EXE --version`, first line, with a short timeout (used at worker registration). Asked once
/// per executable per process: an embedded pool registers several workers at once, and each
/// probe starts a Node.js CLI, which on a loaded machine takes seconds.
pub(crate) async fn version_of(cfg: &AgentConfig, agent: &str, exe: &str) -> Option<String> {
    type Probes = std::sync::Mutex<
        std::collections::HashMap<std::path::PathBuf, Arc<tokio::sync::OnceCell<Option<String>>>>,
    >;
    static PROBES: std::sync::OnceLock<Probes> = std::sync::OnceLock::new();
    let program = cfg.find(agent, exe)?;
    let cell = {
        let mut probes = PROBES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        probes.entry(program.clone()).or_default().clone()
    };
    cell.get_or_init(|| probe_version(cfg, program)).await.clone()
}

/// A `--version` line as the worker registers it: trimmed, and cut to what the server takes
/// (a CLI that prints a long banner still registers).
fn version_line(line: &str) -> String {
    let line = line.trim();
    match line
        .char_indices()
        .nth(agentpool_core::protocol::MAX_AGENT_VERSION)
    {
        Some((at, _)) => line[..at].trim_end().to_string(),
        None => line.to_string(),
    }
}

async fn probe_version(cfg: &AgentConfig, program: std::path::PathBuf) -> Option<String> {
    // A throwaway HOME, removed when the probe ends: `--version` must not read or write the
    // user's agent settings, and the probe must leave nothing behind in the temp directory.
    let tmp = std::env::temp_dir();
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| {
        let tmp = tmp.clone();
        // Off the runtime's threads: the temp directory can hold many entries.
        tokio::task::spawn_blocking(move || probe_home::sweep(&tmp, probe_home::STALE_AFTER));
    });
    let home = probe_home::create(&tmp).ok()?;
    let mut env = process::base_env(Some(&cfg.child_path()));
    env.insert("HOME".into(), home.path().to_string_lossy().into_owned());
    let spec = process::ProcessSpec::new(program)
        .arg("--version")
        .cwd(home.path())
        .envs(env)
        .timeout(Duration::from_secs(20))
        .max_output_bytes(64 * 1024)
        .kill_grace(Duration::from_secs(1));
    let mut first = None;
    let mut on_line = |stream, line: &str| {
        if stream == process::OutputStream::Stdout && first.is_none() && !line.trim().is_empty() {
            first = Some(version_line(line));
        }
    };
    let exit = process::run_process(spec, &mut on_line, &CancellationToken::new())
        .await
        .ok()?;
    exit.success().then_some(first).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_version_line_is_cut_to_what_the_server_takes() {
        assert_eq!(version_line("  2.1.0 (Claude Code)  "), "2.1.0 (Claude Code)");
        let long = "é".repeat(5000);
        let cut = version_line(&long);
        assert_eq!(cut.chars().count(), agentpool_core::protocol::MAX_AGENT_VERSION);
    }
}
