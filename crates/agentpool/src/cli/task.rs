//! The flags of the task commands: `submit`, `run`, `tasks …`, `schedules …` and `workers …`.

use clap::{ArgGroup, Args, Subcommand};

use super::{AgentAccessArgs, parse_duration_secs, parse_error_class, parse_label, parse_overlap};

/// What to run and where: shared by `submit` and `run`.
#[derive(Debug, Clone, Args)]
pub struct TaskArgs {
    /// Repository: a URL (https, ssh) or, on the embedded pool, a local path / file:// URL
    /// [default: the current directory when it is a git repository and no --project is given;
    /// with --follow-up, the earlier task's]
    #[arg(long, value_name = "PATH_OR_URL")]
    pub repo: Option<String>,
    /// Project whose repository and defaults to use
    #[arg(long)]
    pub project: Option<String>,
    /// Ref a new work branch starts from; a work branch the remote already has is continued
    /// instead [default: the remote's default branch]
    #[arg(long, value_name = "REF")]
    pub base: Option<String>,
    /// Work branch; when the remote has it, the task builds on it [default: agentpool/<task id>]
    #[arg(long)]
    pub branch: Option<String>,
    /// Prompt for the agent (also accepted as the positional argument)
    #[arg(long, short = 'p', conflicts_with = "command")]
    pub prompt: Option<String>,
    /// Shell command to run instead of an agent
    #[arg(long, short = 'c')]
    pub command: Option<String>,
    /// Prompt, when --prompt and --command are not given
    #[arg(value_name = "PROMPT", conflicts_with_all = ["prompt", "command"])]
    pub positional_prompt: Option<String>,
    /// Agent to run (claude-code, codex, opencode, gemini) [default: the worker's default]
    #[arg(long)]
    pub agent: Option<String>,
    /// Model for the agent
    #[arg(long)]
    pub model: Option<String>,
    /// Higher runs first (-1000..1000)
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub priority: i32,
    /// Run only after this task succeeded (repeatable). It still starts from --base; to build on
    /// the task's work, name its branch: --base agentpool/<its id>
    #[arg(long = "depends-on", value_name = "TASK_ID")]
    pub depends_on: Vec<agentpool_core::TaskId>,
    /// Label k=v (repeatable): metadata and worker selector
    #[arg(long = "label", value_name = "K=V", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Timeout, e.g. 90s, 10m, 1h
    #[arg(long, value_parser = parse_duration_secs, value_name = "DURATION", allow_hyphen_values = true)]
    pub timeout: Option<u64>,
    /// Attempts before the task fails for good
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Commit message [default: the prompt's or command's first line, the agent's final answer, and an
    /// `Agentpool-Task: <id>` trailer]
    #[arg(long)]
    pub message: Option<String>,
    /// Do not push the work branch (its commit then goes with the workspace, unless the worker
    /// keeps workspaces)
    #[arg(long)]
    pub no_push: bool,
    /// A second submit with the same key (in the same project) returns the first task
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Continue this earlier task: same repository and work branch (it starts from what that
    /// task pushed; with --branch, that branch starts there), agent session resumed where supported
    #[arg(long = "follow-up", value_name = "TASK_ID")]
    pub follow_up: Option<agentpool_core::TaskId>,
    /// Agent turn limit (Claude Code); a run that uses them all fails the task (MAX_TURNS)
    #[arg(long)]
    pub max_turns: Option<u32>,
    /// Stop the agent and fail the task (BUDGET_EXCEEDED) once its reported cost passes this (USD)
    #[arg(long, value_name = "USD", value_parser = super::parse::parse_usd)]
    pub max_cost_usd: Option<f64>,
    /// Shell command run in the workspace before the agent (install dependencies, …)
    #[arg(long, value_name = "COMMAND")]
    pub setup: Option<String>,
    /// Run no earlier than this long from now, e.g. 10m
    #[arg(long, value_parser = parse_duration_secs, value_name = "DURATION", allow_hyphen_values = true)]
    pub delay: Option<u64>,
    /// Do not commit (nor push) what changed
    #[arg(long)]
    pub no_commit: bool,
    /// Stored credential the task needs (repeatable); `anthropic_api_key` reaches the agent as
    /// ANTHROPIC_API_KEY, `git-token` authenticates clone and push
    #[arg(long = "credential", value_name = "NAME")]
    pub credentials: Vec<String>,
    /// Check run in the workspace after the agent, before commit (repeatable); failures are fed
    /// back to the agent until every check passes [default: the project's checks]
    #[arg(long = "check", value_name = "COMMAND")]
    pub checks: Vec<String>,
    /// Most rounds of agent run + checks [default: 3]
    #[arg(long, value_name = "N")]
    pub max_rounds: Option<u32>,
    /// Commit and push the work branch even when checks still fail after the last round
    #[arg(long)]
    pub push_on_checks_failed: bool,
    /// Stored agent profile to run with (settings, MCP servers; `agentpool profiles list`)
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub task: TaskArgs,
    /// Wait for the task to finish; the exit code reflects its outcome
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub task: TaskArgs,
    /// Workers of the transient embedded pool (when no server is running)
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    #[command(flatten)]
    pub access: AgentAccessArgs,
    /// For a transient embedded pool's workers; a running server's workers have their own.
    #[command(
        flatten,
        next_help_heading = "Workers of a transient pool (when no server runs)"
    )]
    pub runner: super::RunnerArgs,
}

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// List tasks, newest first
    #[command(alias = "ls")]
    List(TasksListArgs),
    /// Show a task with its attempts and result
    Show { id: agentpool_core::TaskId },
    /// Cancel queued or running tasks: those named, or every one the filters match
    Cancel(CancelArgs),
    /// Queue failed or canceled tasks again (those named, or every one the filters match), each
    /// with as many more attempts as it allows, and the dependents that failed because it did
    Retry(RetryArgs),
    /// Print a task's events; -f follows them live until the task ends
    Logs(LogsArgs),
    /// Wait until the tasks finish; the exit code is the worst outcome (0 all succeeded, 1 one
    /// failed, 3 one was canceled)
    Wait(WaitArgs),
}

#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    #[arg(required = true, value_name = "TASK_ID")]
    pub ids: Vec<agentpool_core::TaskId>,
    /// Give up after this long, e.g. 90s, 10m, 1h (exit 1; the tasks go on)
    #[arg(long, value_parser = parse_duration_secs, value_name = "DURATION", allow_hyphen_values = true)]
    pub timeout: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct TasksListArgs {
    #[command(flatten)]
    pub filters: TaskFilters,
    /// How many to show, newest first
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
}

/// The filters of `tasks list`, and of `tasks cancel` and `retry` in place of ids.
#[derive(Debug, Clone, Args)]
pub struct TaskFilters {
    /// Only tasks in this state (queued, running, succeeded, failed, canceled; a cancel takes
    /// queued or running, a retry failed or canceled, and both by default)
    #[arg(long)]
    pub state: Option<agentpool_core::TaskState>,
    /// Only tasks of this project
    #[arg(long)]
    pub project: Option<String>,
    /// Only tasks with this label (k=v)
    #[arg(long, value_parser = parse_label)]
    pub label: Option<(String, String)>,
    /// Only tasks claimed last by this worker (its id)
    #[arg(long)]
    pub worker: Option<String>,
    /// Only tasks that need this agent (e.g. codex; `command`: command tasks)
    #[arg(long, value_name = "AGENT")]
    pub agent: Option<String>,
    /// Only tasks whose last attempt ended with this error class (e.g. AUTH_FAILED, in any case)
    #[arg(long, value_name = "CLASS", value_parser = parse_error_class)]
    pub class: Option<agentpool_core::ErrorClass>,
    /// Only tasks this schedule submitted (its name)
    #[arg(long, value_name = "NAME")]
    pub schedule: Option<String>,
}

impl TaskFilters {
    /// The query of `GET /v1/tasks` for these filters, in `state` instead of the one given.
    pub fn query(&self, state: Option<agentpool_core::TaskState>) -> agentpool_core::protocol::TaskListQuery {
        agentpool_core::protocol::TaskListQuery {
            state: state.map(|s| s.to_string()),
            project: self.project.clone(),
            label: self.label.as_ref().map(|(k, v)| format!("{k}={v}")),
            worker: self.worker.clone(),
            agent: self.agent.clone(),
            class: self.class.map(|c| c.as_str().to_string()),
            schedule: self.schedule.clone(),
            cursor: None,
            limit: None,
        }
    }
}

/// Which tasks a cancel or a retry acts on: the ones named, or every one the filters match
/// among those it can act on.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("which").required(true).multiple(true)
    .args(["ids", "state", "project", "label", "worker", "agent", "class", "schedule"])))]
pub struct Selection {
    /// The tasks, by id (or the filters instead)
    #[arg(value_name = "ID", conflicts_with_all = ["state", "project", "label", "worker", "agent", "class", "schedule"])]
    pub ids: Vec<agentpool_core::TaskId>,
    #[command(flatten)]
    pub filters: TaskFilters,
    /// List the tasks the filters match and act on none
    #[arg(long, conflicts_with = "ids")]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CancelArgs {
    #[command(flatten)]
    pub which: Selection,
    /// Why (1-500 characters): kept in each task's message and events
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct RetryArgs {
    #[command(flatten)]
    pub which: Selection,
}

#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    pub id: agentpool_core::TaskId,
    /// Follow new events until the task finishes
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// With -f: exit with the task's outcome, as `run` does (0 succeeded, 1 failed, 3
    /// canceled) instead of 0 once it ends
    #[arg(long, requires = "follow")]
    pub exit_status: bool,
}

#[derive(Debug, Subcommand)]
pub enum WorkersCommand {
    /// List workers
    #[command(alias = "ls")]
    List,
    /// Show one worker
    Show { id: String },
    /// Ask a worker to stop claiming and finish what it runs
    Drain { id: String },
}

/// `agentpool status`: which workers to count for; all of them when none is given.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Workers with this label only (repeatable), and the queued tasks they could run: those
    /// whose labels they all have
    #[arg(long = "label", value_name = "K=V", value_parser = super::parse_label)]
    pub labels: Vec<(String, String)>,
    /// Workers offering these agents only (comma separated): queued tasks needing another
    /// agent are not counted (command tasks always are)
    #[arg(long, value_name = "AGENT", value_delimiter = ',')]
    pub agents: Vec<String>,
    /// Queued tasks of these projects only (comma separated)
    #[arg(long, value_name = "PROJECT", value_delimiter = ',')]
    pub projects: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// Create or replace a schedule: a task (the flags of `submit`) submitted on a cron expression
    #[command(alias = "create", after_help = super::SCHEDULE_EXAMPLES)]
    Put(Box<SchedulePutArgs>),
    /// List schedules, with when each runs next and what its last run did
    #[command(alias = "ls")]
    List,
    /// Show a schedule (JSON: its task and its state)
    Show { name: String },
    /// Submit a schedule's task now (also when paused; its next run stays as it was)
    Run { name: String },
    /// Stop a schedule submitting tasks until it is resumed
    Pause { name: String },
    /// Let a paused schedule run again, from its next run time after now
    Resume { name: String },
    /// Delete a schedule (the tasks it submitted are not touched)
    #[command(alias = "rm")]
    Delete { name: String },
}

#[derive(Debug, Clone, Args)]
pub struct SchedulePutArgs {
    /// Name: 1-64 characters from [a-z0-9._-]
    pub name: String,
    /// When: five crontab fields (minute hour day-of-month month day-of-week), e.g. "0 6 * * 1-5",
    /// or @hourly, @daily, @weekly, @monthly, @yearly
    #[arg(long)]
    pub cron: String,
    /// IANA time zone the expression is read in, e.g. Europe/Berlin [default: UTC]
    #[arg(long, value_name = "ZONE")]
    pub time_zone: Option<String>,
    /// When the task of the run before is still queued or running: `skip` this run, or `allow`
    /// another task beside it
    #[arg(long, value_name = "POLICY", default_value = "skip", value_parser = parse_overlap)]
    pub overlap: agentpool_core::schedule::Overlap,
    /// Store it paused (`schedules resume` starts it)
    #[arg(long)]
    pub paused: bool,
    #[command(flatten)]
    pub task: TaskArgs,
}
