//! One task, start to end (docs/architecture.md): validate, prepare the workspace, run the setup command,
//! run the command or the agent, commit and push, and decide what to report — a result, or a
//! failure with its error class.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentpool_agents::{EventSink, Registry};
use agentpool_core::{BranchName, ErrorClass, Lifecycle, NewEvent, RepoUrl, TaskKind, TaskResult};

use crate::api::ClaimedWork;
use crate::git::{AskPass, Git, GitCredentials, GitOptions};
use crate::private::PrivateDir;
use crate::process::{OutputStream, ProcessSpec, run_process};
mod cancel;
mod credentials;
mod dirs;
mod failure;
mod message;
mod post;
mod rounds;
mod secrets;
mod snapshot;

pub use cancel::{CancelCause, TaskCancel};
use dirs::TaskDirs;
use failure::{Failed, failed, git_failure, process_failure, with_timeout};
pub(crate) use message::TASK_TRAILER;

use crate::workspace::{MirrorLocks, PrepareRequest, Workspace, WorkspaceConfig, WorkspaceError, prepare};

/// Credential names whose value is the git token for the task's repository (the first found
/// wins). Every other credential is handed to the command/agent as an environment variable.
pub const GIT_TOKEN_CREDENTIALS: [&str; 2] = ["git-token", "GIT_TOKEN"];

/// How tasks are executed on this worker.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub workspace: WorkspaceConfig,
    /// Private worker state (askpass programs, token files, git's HOME); not visible to tasks
    /// through any path they are given.
    pub state_dir: PathBuf,
    /// Accept `file://` and local-path repositories.
    pub allow_file_repos: bool,
    /// Limit for each git command.
    pub git_timeout: Duration,
    /// The git credentials used when the task brings none.
    pub git_credentials: Option<GitCredentials>,
    /// Send git credentials over plain `http://` to another machine (refused by default: they
    /// would cross the network in clear text).
    pub allow_http_credentials: bool,
    pub commit_author_name: String,
    pub commit_author_email: String,
    /// SIGTERM → SIGKILL delay for commands and agents.
    pub kill_grace: Duration,
    /// Output allowed per command/agent run.
    pub max_output_bytes: u64,
    /// How much of that output an attempt records as events ([`crate::log_limit::LogLimit`]).
    pub log_limit: crate::log_limit::LogLimit,
    /// Variables added to every command's and agent's environment (e.g. a model endpoint).
    pub extra_env: BTreeMap<String, String>,
    /// Like `extra_env`, but secret (keys passed from the caller's environment to an embedded
    /// pool): masked in events like credentials.
    pub secret_env: BTreeMap<String, String>,
    /// Per agent name, the user's home whose login files that agent may use (an embedded
    /// pool's "use my local login"). Empty for a worker of a server.
    pub local_logins: BTreeMap<String, PathBuf>,
    /// Keep task directories after the run (debugging).
    pub keep_workspaces: bool,
    /// The git executable (looked up in `PATH` when it has no slash).
    pub git_program: PathBuf,
}

impl PipelineConfig {
    /// Defaults under `dir`: workspaces in `dir/tasks`, state in `dir/state`, no mirror cache.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Self {
            workspace: WorkspaceConfig {
                root: dir.join("tasks"),
                mirror_dir: None,
            },
            state_dir: dir.join("state"),
            allow_file_repos: false,
            allow_http_credentials: false,
            git_timeout: Duration::from_secs(15 * 60),
            git_credentials: None,
            commit_author_name: "agentpool".into(),
            commit_author_email: "agentpool@localhost".into(),
            kill_grace: Duration::from_secs(10),
            max_output_bytes: 64 * 1024 * 1024,
            log_limit: crate::log_limit::LogLimit::default(),
            extra_env: BTreeMap::new(),
            secret_env: BTreeMap::new(),
            local_logins: BTreeMap::new(),
            keep_workspaces: false,
            git_program: PathBuf::from("git"),
        }
    }

    /// Where the processes of this worker's runs are recorded while they run, which a worker
    /// starting again on the same state (or a pool cleaning up after a dead one) kills if they
    /// were left running.
    pub fn running_records(&self) -> PathBuf {
        self.state_dir.join("running")
    }
}

/// What to tell the queue about a finished run.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    Complete(TaskResult),
    Fail {
        class: ErrorClass,
        message: String,
        retry_after: Option<Duration>,
        result: Option<TaskResult>,
        /// The worker's own fault though the class is the task's: the agent refused a key
        /// the worker supplied. Counts toward the worker turning unhealthy.
        worker_fault: bool,
    },
    /// The lease was lost: any report would be refused. With what the run produced, so that
    /// the worker can still say what it did (a commit it pushed).
    Abandon(Option<TaskResult>),
}

impl Report {
    /// The same run, its lease lost: reported to nobody.
    pub fn abandoned(self) -> Report {
        match self {
            Report::Complete(r) => Report::Abandon(Some(r)),
            Report::Fail { result, .. } | Report::Abandon(result) => Report::Abandon(result),
        }
    }

    /// What the run produced, as far as it got.
    pub fn result(&self) -> Option<&TaskResult> {
        match self {
            Report::Complete(r) => Some(r),
            Report::Fail { result, .. } | Report::Abandon(result) => result.as_ref(),
        }
    }
}

/// Runs tasks; shared by all of a worker's slots.
pub struct Pipeline {
    cfg: PipelineConfig,
    agents: Registry,
    locks: MirrorLocks,
}

/// Make `path` absolute against the current directory; left as it is if that cannot be read.
fn absolutize(path: &mut PathBuf) {
    if let Ok(abs) = std::path::absolute(&*path) {
        *path = abs;
    }
}

impl Pipeline {
    pub fn new(mut cfg: PipelineConfig, agents: Registry) -> Self {
        // git and the agents run with the workspace as their working directory, so a relative
        // path given here would name somewhere else (or nothing) by the time they use it.
        absolutize(&mut cfg.workspace.root);
        absolutize(&mut cfg.state_dir);
        if let Some(m) = &mut cfg.workspace.mirror_dir {
            absolutize(m);
        }
        Self {
            cfg,
            agents,
            locks: MirrorLocks::global(),
        }
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    pub fn agents(&self) -> &Registry {
        &self.agents
    }

    /// How much output an attempt of this pipeline records.
    pub fn log_limit(&self) -> crate::log_limit::LogLimit {
        self.cfg.log_limit
    }

    /// Run the claimed task to its end. Events go to `events`; `cancel` stops it.
    pub async fn run(&self, work: &ClaimedWork, events: Arc<dyn EventSink>, cancel: &TaskCancel) -> Report {
        let started = Instant::now();
        let mut result = TaskResult::default();
        let mut dirs = TaskDirs::default();
        let outcome = self
            .run_inner(work, &events, cancel, &mut result, &mut dirs)
            .await;
        dirs.remove(self.cfg.keep_workspaces).await;
        // The task's minted git token has done its work (clone, push): it ends here.
        crate::minted::revoke(work).await;
        result.duration_ms = started.elapsed().as_millis() as u64;
        let redactor = self.redactor_for(work);
        // The result is the task's own output: secrets it printed (or named files after)
        // must not reach it any more than its events.
        secrets::redact_result(&redactor, &mut result);
        match outcome {
            // The terminal lifecycle event (succeeded, failed, canceled) is written by the
            // store together with the report, so the record cannot end twice.
            Ok(()) => Report::Complete(result),
            Err(f) => match cancel.cause() {
                Some(CancelCause::LeaseLost) => Report::Abandon(Some(result)),
                // Stopped because the worker (or the pod running it) is going away, not
                // because anyone canceled the task: an infrastructure failure, retried like
                // an evicted pod's. Had a user canceled it meanwhile, the store records the
                // cancel instead.
                Some(CancelCause::Shutdown) => Report::Fail {
                    class: ErrorClass::InfraError,
                    message: "the worker was stopped before the task finished".into(),
                    retry_after: None,
                    result: Some(result),
                    worker_fault: false,
                },
                Some(_) => Report::Fail {
                    class: ErrorClass::Canceled,
                    message: "canceled".into(),
                    retry_after: None,
                    result: Some(result),
                    worker_fault: false,
                },
                None => {
                    let message = match f.class {
                        ErrorClass::Timeout => {
                            with_timeout(&f.message, work.claimed.task.spec.timeout_secs())
                        }
                        _ => f.message,
                    };
                    let message = redactor.redact(&message);
                    Report::Fail {
                        class: f.class,
                        message,
                        retry_after: f.retry_after,
                        result: Some(result),
                        worker_fault: f.worker_fault,
                    }
                }
            },
        }
    }

    async fn run_inner(
        &self,
        work: &ClaimedWork,
        events: &Arc<dyn EventSink>,
        cancel: &TaskCancel,
        result: &mut TaskResult,
        dirs: &mut TaskDirs,
    ) -> Result<(), Failed> {
        let task = &work.claimed.task;
        let spec = &task.spec;
        let deadline = Instant::now() + Duration::from_secs(spec.timeout_secs());

        // ---- validate ----
        let repo = spec
            .repo
            .as_deref()
            .ok_or_else(|| failed(ErrorClass::InvalidTask, "the task names no repository"))?;
        if !self.cfg.allow_file_repos && RepoUrl::names_local(repo) {
            // The server accepted it (it allows local repositories), but reading a path from
            // this machine's disk is the worker's own opt-in: say whose setting refused it.
            return Err(failed(
                ErrorClass::InvalidTask,
                "repo: local repositories (file:// or a path) are not enabled on this worker \
                 (agentpool worker --allow-local-repos)",
            ));
        }
        let url = RepoUrl::parse(repo, self.cfg.allow_file_repos)
            .map_err(|e| failed(ErrorClass::InvalidTask, e.to_string()))?;
        let branch = match &spec.branch {
            Some(b) => BranchName::parse(b).map_err(|e| failed(ErrorClass::InvalidTask, e.to_string()))?,
            None => BranchName::for_task(task.id),
        };
        if let Some(b) = &spec.base_ref
            && (b.starts_with('-') || b.chars().any(|c| c.is_control() || c == ' '))
        {
            return Err(failed(ErrorClass::InvalidTask, "base_ref is not a valid git ref"));
        }
        enum Run {
            Command(String),
            Agent(Arc<dyn agentpool_agents::CodeAgent>, String),
        }
        let run = match spec.kind {
            TaskKind::Command => Run::Command(
                spec.command
                    .clone()
                    .filter(|c| !c.trim().is_empty())
                    .ok_or_else(|| failed(ErrorClass::InvalidTask, "a command task needs a command"))?,
            ),
            TaskKind::Agent => {
                let agent = match &spec.agent {
                    Some(name) => self.agents.get(name).ok_or_else(|| {
                        failed(
                            ErrorClass::InvalidTask,
                            format!("agent {name:?} is not available on this worker"),
                        )
                    })?,
                    None => self.agents.default_agent().ok_or_else(|| {
                        failed(ErrorClass::InvalidTask, "no agent is available on this worker")
                    })?,
                };
                let prompt = spec
                    .prompt
                    .clone()
                    .ok_or_else(|| failed(ErrorClass::InvalidTask, "an agent task needs a prompt"))?;
                Run::Agent(agent, prompt)
            }
        };

        // ---- credentials ----
        let creds = self.git_credentials(work, repo)?;
        let askpass = match &creds {
            Some(c) => {
                let dir = PrivateDir::create(&self.cfg.state_dir.join("credentials")).map_err(|e| {
                    failed(
                        ErrorClass::WorkerError,
                        format!("cannot create a private directory: {e}"),
                    )
                })?;
                let dir = dirs.credentials.insert(dir);
                Some(
                    AskPass::install(dir.path(), c)
                        .map_err(|e| failed(ErrorClass::GitError, format!("cannot install askpass: {e}")))?,
                )
            }
            None => None,
        };
        // One redactor for git's output and the run's output lines (reading the lent logins
        // once); the report's is made again after the run, for a token the agent refreshed.
        let redactor = Arc::new(self.redactor_for(work));
        let git_home = self.cfg.state_dir.join("git-home");
        std::fs::create_dir_all(&git_home)
            .map_err(|e| failed(ErrorClass::GitError, format!("cannot create git home: {e}")))?;
        let git = Git::new(GitOptions {
            home: git_home,
            askpass: askpass.clone(),
            allow_file: self.cfg.allow_file_repos,
            timeout: self.cfg.git_timeout,
            redactor: (*redactor).clone(),
        })
        .with_program(self.cfg.git_program.clone())
        .recording(self.group_record(task.id));

        // ---- workspace ----
        events.emit(NewEvent::log(
            "agentpool",
            format!("preparing workspace for {}", url),
        ));
        // The task's directory (checkout, HOME, scratch) goes inside a private one.
        let private = PrivateDir::create(&self.cfg.workspace.root).map_err(|e| {
            failed(
                ErrorClass::WorkerError,
                format!("cannot create a private directory: {e}"),
            )
        })?;
        let ws_cfg = WorkspaceConfig {
            root: dirs.workspace.insert(private).path().to_path_buf(),
            mirror_dir: self.cfg.workspace.mirror_dir.clone(),
        };
        let ws = prepare(
            &git,
            &ws_cfg,
            &self.locks,
            PrepareRequest {
                task_id: task.id,
                url: &url,
                base_ref: spec.base_ref.as_deref(),
                branch: &branch,
                own_branch: (spec.branch.is_none() && spec.follow_up_of.is_none())
                    .then(|| task.result.as_ref().and_then(|r| r.commit_sha.as_deref())),
            },
            cancel.token(),
        )
        .await
        .map_err(|e| match e {
            WorkspaceError::Git(g) => git_failure(g),
            WorkspaceError::BadRef(m) => failed(ErrorClass::InvalidTask, m),
            WorkspaceError::Io(e) => failed(ErrorClass::GitError, format!("workspace: {e}")),
        })?;
        // The token exists on disk only while git runs, not while the task's own code does.
        if let Some(a) = &askpass {
            a.remove_token()
                .map_err(|e| failed(ErrorClass::GitError, format!("cannot remove the token file: {e}")))?;
        }
        events.emit(NewEvent::new(Lifecycle::WorkspaceReady {
            branch: branch.to_string(),
            base_sha: ws.base_sha.clone(),
            warm: ws.warm,
            prepare_ms: ws.prepare_ms,
            phases: Some(ws.phases),
        }));
        if let Some(lost) = &ws.replaces {
            let line = format!(
                "an earlier attempt of this task pushed {lost} to {branch} but its worker was lost \
                 before reporting it; this attempt starts again from {}, where that one started, \
                 and its push replaces that commit",
                ws.base_sha
            );
            tracing::warn!(task = %task.id, attempt = work.claimed.attempt, "{line}");
            events.emit(NewEvent::log("agentpool", line));
        }

        let env = self.task_env(work, &ws);
        let mask = crate::process::LineMask::new(redactor);
        let scope = Scope {
            work,
            ws: &ws,
            env: &env,
            mask: &mask,
            deadline,
            events,
            cancel,
        };

        // ---- setup ----
        if let Some(setup) = spec.setup_command.as_deref().filter(|s| !s.trim().is_empty()) {
            events.emit(NewEvent::new(Lifecycle::SetupStarted));
            let (out, said) = self.shell(setup, &scope).await?;
            if !out.success() {
                return Err(process_failure(
                    &out,
                    "setup command",
                    said.as_deref(),
                    self.cfg.max_output_bytes,
                ));
            }
        }

        // ---- run, then checks and feedback rounds ----
        let agent = match run {
            Run::Command(cmd) => {
                events.emit(NewEvent::new(Lifecycle::AgentStarted {
                    agent: "command".into(),
                }));
                let (out, said) = self.shell(&cmd, &scope).await?;
                result.exit_code = out.exit_code;
                if !out.success() {
                    return Err(process_failure(
                        &out,
                        "command",
                        said.as_deref(),
                        self.cfg.max_output_bytes,
                    ));
                }
                None
            }
            Run::Agent(agent, prompt) => {
                let resume = work.claimed.resume_session.clone();
                rounds::say_if_not_resumed(work, events);
                self.run_agent(&agent, prompt, resume, &scope, result).await?;
                Some(agent)
            }
        };
        let checks_failed = self.check_rounds(agent.as_ref(), &git, &scope, result).await?;
        if let Some(message) = &checks_failed
            && !spec.push_on_checks_failed
        {
            return Err(failed(ErrorClass::ChecksFailed, message.clone()));
        }

        // ---- post-run ----
        let post_git = post::PostGit {
            git: &git,
            askpass: askpass.as_ref(),
            creds: creds.as_ref(),
        };
        self.post_run(&scope, post_git, result).await?;
        match checks_failed {
            Some(message) => Err(failed(ErrorClass::ChecksFailed, message)),
            None => Ok(()),
        }
    }

    /// Where every process a task runs (git, setup, agent, command, checks) is recorded while
    /// it runs: a worker killed mid-task and started again kills them before taking work, so
    /// an orphaned agent does not go on editing and spending next to the task's next attempt.
    pub(crate) fn group_record(&self, task: agentpool_core::TaskId) -> crate::process::GroupRecord {
        crate::process::GroupRecord::task(self.cfg.running_records(), task)
    }

    /// The command's environment: nothing from the worker except PATH, plus what the task needs.
    fn task_env(&self, work: &ClaimedWork, ws: &Workspace) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        env.insert(
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        );
        env.insert("HOME".to_string(), ws.home.display().to_string());
        env.insert("LANG".to_string(), "C.UTF-8".to_string());
        let tmp = ws.task_dir.join("tmp");
        if std::fs::create_dir_all(&tmp).is_ok() {
            env.insert("TMPDIR".to_string(), tmp.display().to_string());
        }
        for (k, v) in self.cfg.extra_env.iter().chain(&self.cfg.secret_env) {
            env.insert(k.clone(), v.clone());
        }
        // The profile's variables (validated non-secret at submit); credentials still win.
        if let Some(p) = &work.claimed.task.spec.profile_settings {
            for (k, v) in &p.env {
                env.insert(k.clone(), v.clone());
            }
        }
        for (name, value) in work.credentials.iter() {
            if GIT_TOKEN_CREDENTIALS.contains(&name) {
                continue;
            }
            let var: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            if !var.is_empty() && !var.starts_with(|c: char| c.is_ascii_digit()) {
                env.insert(var, value.to_string());
            }
        }
        let task = &work.claimed.task;
        env.insert("AGENTPOOL_TASK_ID".into(), task.id.to_string());
        env.insert("AGENTPOOL_ATTEMPT".into(), work.claimed.attempt.to_string());
        env.insert("AGENTPOOL_BRANCH".into(), ws.branch.to_string());
        env.insert("AGENTPOOL_WORKDIR".into(), ws.dir.display().to_string());
        env
    }

    /// Run `script` with `sh -c` in the workspace; its outcome, and the last line it wrote to
    /// stderr (what a failure message quotes: `sh: 1: make: not found` says more than an exit
    /// code).
    async fn shell(
        &self,
        script: &str,
        scope: &Scope<'_>,
    ) -> Result<(crate::process::ProcessOutcome, Option<String>), Failed> {
        let mut spec = ProcessSpec::new("sh")
            .arg("-c")
            .arg(script)
            .cwd(&scope.ws.dir)
            .timeout(scope.deadline.saturating_duration_since(Instant::now()))
            .kill_grace(self.cfg.kill_grace)
            .max_output_bytes(self.cfg.max_output_bytes)
            .mask_lines(scope.mask.clone())
            .record_group(self.group_record(scope.work.claimed.task.id));
        spec.env = scope
            .env
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect();
        let sink = scope.events.clone();
        let mut last_stderr: Option<String> = None;
        let mut on_line = |stream: OutputStream, line: &str| {
            if stream == OutputStream::Stderr && !line.trim().is_empty() {
                last_stderr = Some(line.trim().to_string());
            }
            sink.emit(NewEvent::log(stream.as_str(), line));
        };
        let out = run_process(spec, &mut on_line, scope.cancel.token())
            .await
            .map_err(|e| {
                let class = if agentpool_agents::is_spawn_failure(&e) {
                    ErrorClass::WorkerError
                } else {
                    ErrorClass::AgentError
                };
                failed(class, format!("cannot start the command: {e}"))
            })?;
        Ok((out, last_stderr))
    }
}

/// The task as each step after the workspace is ready runs it: setup, the command or agent,
/// checks and feedback rounds.
#[derive(Clone, Copy)]
struct Scope<'a> {
    work: &'a ClaimedWork,
    ws: &'a Workspace,
    env: &'a BTreeMap<String, String>,
    /// Masks the output lines of the setup, the command and the checks as they are read.
    mask: &'a crate::process::LineMask,
    deadline: Instant,
    events: &'a Arc<dyn EventSink>,
    cancel: &'a TaskCancel,
}
