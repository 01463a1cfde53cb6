//! The command line: every subcommand and flag of `agentpool`, as clap types.
//!
//! Only parsing lives here; what each command does is in `commands/`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Run AI coding agents at scale: a durable work queue and a pool of workers.
#[derive(Debug, Parser)]
#[command(name = "agentpool", version, about, long_about = None)]
#[command(after_help = EXIT_CODES_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (for run / submit --wait: the task succeeded)
  1  the task failed, or the command could not do what was asked
  2  usage error: bad flags or input the server refused as invalid
  3  the task was canceled
  4  the server could not be reached or answered with an error";

const RUN_EXAMPLES: &str = "\
Examples:
  agentpool run --repo . --command 'cargo test'
  agentpool run --repo ./app --agent claude-code --credential anthropic_api_key 'fix the flaky test'
  agentpool run --repo https://github.com/o/r.git --branch fix/readme -p 'tidy the README' -o json";

const SUBMIT_EXAMPLES: &str = "\
Examples:
  id=$(agentpool submit --repo ./app --command 'make lint')
  agentpool submit --repo ./app --depends-on $id --command 'make release' --wait
  agentpool submit --project web --agent codex --label gpu=yes --priority 10 -p 'upgrade deps'";

/// Flags every subcommand accepts. Values come from the flag, else the `AGENTPOOL_*`
/// environment variable, else the config file in the data directory.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Where the embedded database, the config file and the state of `agentpool up` live
    /// [default: ./.agentpool, or the user's data directory]
    #[arg(long, global = true, env = "AGENTPOOL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// URL of a running agentpool server [default: the `agentpool up` server of the data dir]
    #[arg(long, global = true, env = "AGENTPOOL_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// Bearer token for the server
    #[arg(
        long,
        global = true,
        env = "AGENTPOOL_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Output format
    #[arg(long, short = 'o', global = true, env = "AGENTPOOL_OUTPUT", value_enum)]
    pub output: Option<OutputFormat>,
    /// PEM file of a CA certificate to trust for an https:// server, besides the system's roots
    #[arg(long, global = true, env = "AGENTPOOL_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the embedded pool: server + workers + SQLite in the data dir, no auth on loopback
    Up(UpArgs),
    /// Run the API server (production: PostgreSQL, tokens, separate workers)
    Serve(ServeArgs),
    /// Run a worker that claims tasks from a server over HTTP
    Worker(WorkerArgs),
    /// Apply database migrations and exit
    Migrate(MigrateArgs),
    /// Submit a task and follow it to the end (starts a transient embedded pool if no server runs)
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Submit a task
    #[command(after_help = SUBMIT_EXAMPLES)]
    Submit(SubmitArgs),
    /// Inspect and control tasks
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// Inspect and drain workers
    #[command(subcommand)]
    Workers(WorkersCommand),
    /// Manage projects (named repository configurations)
    #[command(subcommand)]
    Projects(ProjectsCommand),
    /// Manage stored credentials (API keys, git tokens), handed only to the tasks that name them
    #[command(subcommand)]
    Credentials(CredentialsCommand),
    /// Manage agent profiles (non-secret agent settings and MCP servers that tasks name)
    #[command(subcommand)]
    Profiles(ProfilesCommand),
    /// Manage API tokens
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Run a self-contained demonstration: a sample repo, the embedded pool, several tasks
    Demo(DemoArgs),
    /// Run each claimed task as a Kubernetes Job (a worker whose slots are Jobs)
    Launcher(crate::commands::launcher::LauncherArgs),
    /// Run one claimed attempt from its attempt file (what a launcher's Job runs)
    RunTask(crate::commands::run_task::RunTaskArgs),
    /// Run the WorkerPool operator: warm worker pools on Kubernetes, scaled on queue depth
    Operator(crate::commands::operator::OperatorArgs),
    /// Print the WorkerPool CustomResourceDefinition (YAML)
    Crd,
    /// Print shell completions
    Completions(CompletionsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// In-process workers to start
    #[arg(long, env = "AGENTPOOL_WORKERS", default_value_t = 2)]
    pub workers: u32,
    /// Tasks each worker runs at once
    #[arg(long, env = "AGENTPOOL_CONCURRENCY", default_value_t = 2)]
    pub concurrency: u32,
    /// Address to listen on; the embedded pool only listens on loopback
    #[arg(long, env = "AGENTPOOL_LISTEN", default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,
    /// Database URL [default: sqlite in the data dir]
    #[arg(long, env = "AGENTPOOL_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// Agents the workers may run (comma separated) [default: all installed, plus command]
    #[arg(long, value_delimiter = ',')]
    pub agents: Vec<String>,
    #[command(flatten)]
    pub access: AgentAccessArgs,
}

/// What an embedded pool's tasks may take from the caller: named variables and local logins.
/// Nothing is inherited without these; `serve` and `worker` have no such flags.
#[derive(Debug, Clone, Default, Args)]
pub struct AgentAccessArgs {
    /// Pass this variable from your environment to every task (repeatable; e.g.
    /// ANTHROPIC_API_KEY). Its value is masked in events like a stored credential
    #[arg(long = "agent-env", value_name = "NAME")]
    pub agent_env: Vec<String>,
    /// Let this agent use your local login (repeatable or comma separated: claude-code, codex,
    /// opencode): its login file is copied into the task's private home and a refreshed token
    /// written back
    #[arg(long = "use-local-login", value_name = "AGENT", value_delimiter = ',')]
    pub use_local_login: Vec<String>,
}

impl AgentAccessArgs {
    pub fn is_empty(&self) -> bool {
        self.agent_env.is_empty() && self.use_local_login.is_empty()
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, env = "AGENTPOOL_LISTEN", default_value = "0.0.0.0:7700")]
    pub listen: SocketAddr,
    /// Database URL (postgres://… or sqlite://…) [default: sqlite in the data dir]
    #[arg(long, env = "AGENTPOOL_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// Accept tasks on local repositories (paths and file:// URLs)
    #[arg(long, env = "AGENTPOOL_ALLOW_LOCAL_REPOS")]
    pub allow_local_repos: bool,
    /// Allow requests without a token (only honoured when listening on loopback)
    #[arg(long, env = "AGENTPOOL_NO_AUTH")]
    pub no_auth: bool,
    /// Create an admin token at start and print it once (when the database has no tokens)
    #[arg(long)]
    pub bootstrap_token: bool,
    /// Key encrypting stored credentials (32 bytes, base64); credential writes are refused
    /// without one
    #[arg(
        long,
        env = "AGENTPOOL_SERVER_KEY",
        hide_env_values = true,
        value_name = "BASE64"
    )]
    pub server_key: Option<String>,
    /// Serve https with this certificate chain (PEM); needs --tls-key
    #[arg(long, env = "AGENTPOOL_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert
    #[arg(long, env = "AGENTPOOL_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The URL users reach this server at (task links in GitHub status comments)
    #[arg(long, env = "AGENTPOOL_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Lease length in seconds: how long a claimed task stays with a worker that stopped
    /// heartbeating before it runs again elsewhere (keep it several heartbeats long)
    #[arg(long, env = "AGENTPOOL_LEASE_TTL_SECS", default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(2..=86_400))]
    pub lease_ttl_secs: u64,
    /// Seconds between maintenance passes (expired leases, offline workers, purge), ± 20 %
    #[arg(long, env = "AGENTPOOL_MAINTENANCE_SECS", default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub maintenance_secs: u64,
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Tasks run at once
    #[arg(long, short = 'c', env = "AGENTPOOL_CONCURRENCY", default_value_t = 1)]
    pub concurrency: u32,
    /// Labels this worker carries (k=v); a task only runs on workers with all its labels
    #[arg(long = "labels", alias = "label", value_name = "K=V", value_delimiter = ',', value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Agents this worker may run (comma separated) [default: all installed, plus command]
    #[arg(long, value_delimiter = ',')]
    pub agents: Vec<String>,
    /// Worker id (to re-register under the same id after a restart) [default: host name + suffix]
    #[arg(long, env = "AGENTPOOL_WORKER_ID")]
    pub id: Option<String>,
    /// Where workspaces and the git mirror cache live [default: <data dir>/work]
    #[arg(long, env = "AGENTPOOL_WORK_DIR", value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Seconds running tasks may take to finish after SIGTERM before they are canceled
    #[arg(long, default_value_t = 300)]
    pub drain_grace_secs: u64,
    /// Seconds between heartbeats, which extend the leases of running tasks (keep it well
    /// below the server's --lease-ttl-secs)
    #[arg(long, env = "AGENTPOOL_HEARTBEAT_SECS", default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub heartbeat_secs: u64,
    /// Accept tasks on local repositories (paths and file:// URLs) from the server
    #[arg(long, env = "AGENTPOOL_ALLOW_LOCAL_REPOS")]
    pub allow_local_repos: bool,
    /// Serve a health probe here: /healthz while the process runs, /readyz (200) only while
    /// the worker is registered and claiming (503 starting, draining or unhealthy)
    #[arg(long, env = "AGENTPOOL_HEALTH_LISTEN", value_name = "ADDR")]
    pub health_listen: Option<std::net::SocketAddr>,
    /// Keep the bare mirror cache here (e.g. a persistent volume) [default: <work dir>/mirrors]
    #[arg(long, env = "AGENTPOOL_MIRROR_DIR", value_name = "DIR")]
    pub mirror_dir: Option<PathBuf>,
    /// Prune mirrors not used for this many days
    #[arg(long, value_name = "DAYS")]
    pub mirror_max_age_days: Option<u64>,
    /// Prune the least recently used mirrors while the cache is larger than this (MiB)
    #[arg(long, value_name = "MIB")]
    pub mirror_max_size_mib: Option<u64>,
    /// After a drain the server asks for, stay registered until stopped instead of exiting
    /// (for supervisors that restart exited workers, e.g. a WorkerPool's StatefulSet)
    #[arg(long)]
    pub stay_drained: bool,
}

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Database URL [default: sqlite in the data dir]
    #[arg(long, env = "AGENTPOOL_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
}

/// What to run and where: shared by `submit` and `run`.
#[derive(Debug, Clone, Args)]
pub struct TaskArgs {
    /// Repository: a URL (https, ssh) or, on the embedded pool, a local path / file:// URL
    /// [default: the current directory when it is a git repository and no --project is given]
    #[arg(long, value_name = "PATH_OR_URL")]
    pub repo: Option<String>,
    /// Project whose repository and defaults to use
    #[arg(long)]
    pub project: Option<String>,
    /// Ref to start from [default: the remote's default branch]
    #[arg(long, value_name = "REF")]
    pub base: Option<String>,
    /// Work branch [default: agentpool/<task id>]
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
    /// Run only after this task succeeded (repeatable)
    #[arg(long = "depends-on", value_name = "TASK_ID")]
    pub depends_on: Vec<agentpool_core::TaskId>,
    /// Label k=v (repeatable): metadata and worker selector
    #[arg(long = "label", value_name = "K=V", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Timeout, e.g. 90s, 10m, 1h
    #[arg(long, value_parser = parse_duration_secs, value_name = "DURATION")]
    pub timeout: Option<u64>,
    /// Attempts before the task fails for good
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Commit message [default: from the agent's summary or the command]
    #[arg(long)]
    pub message: Option<String>,
    /// Do not push the work branch
    #[arg(long)]
    pub no_push: bool,
    /// A second submit with the same key returns the first task
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Continue this earlier task: same work branch, agent session resumed where supported
    #[arg(long = "follow-up", value_name = "TASK_ID")]
    pub follow_up: Option<agentpool_core::TaskId>,
    /// Agent turn limit
    #[arg(long)]
    pub max_turns: Option<u32>,
    /// Stop the agent and fail the task (BUDGET_EXCEEDED) once its reported cost passes this (USD)
    #[arg(long, value_name = "USD")]
    pub max_cost_usd: Option<f64>,
    /// Shell command run in the workspace before the agent (install dependencies, …)
    #[arg(long, value_name = "COMMAND")]
    pub setup: Option<String>,
    /// Run no earlier than this long from now, e.g. 10m
    #[arg(long, value_parser = parse_duration_secs, value_name = "DURATION")]
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
}

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// List tasks, newest first
    #[command(alias = "ls")]
    List(TasksListArgs),
    /// Show a task with its attempts and result
    Show { id: agentpool_core::TaskId },
    /// Cancel a queued or running task
    Cancel { id: agentpool_core::TaskId },
    /// Queue a failed or canceled task again
    Retry { id: agentpool_core::TaskId },
    /// Print a task's events; -f follows them live until the task ends
    Logs(LogsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct TasksListArgs {
    /// Only tasks in this state (queued, running, succeeded, failed, canceled)
    #[arg(long)]
    pub state: Option<agentpool_core::TaskState>,
    #[arg(long)]
    pub project: Option<String>,
    /// Only tasks with this label (k=v)
    #[arg(long, value_parser = parse_label)]
    pub label: Option<(String, String)>,
    #[arg(long)]
    pub worker: Option<String>,
    /// How many to show
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    pub id: agentpool_core::TaskId,
    /// Follow new events until the task finishes
    #[arg(long, short = 'f')]
    pub follow: bool,
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

#[derive(Debug, Subcommand)]
pub enum ProjectsCommand {
    /// List projects
    #[command(alias = "ls")]
    List,
    /// Show one project
    Show { name: String },
    /// Create or update a project
    #[command(alias = "create")]
    Put(Box<ProjectPutArgs>),
    /// Create or update a project and submit its build in one call
    Build(Box<ProjectBuildArgs>),
    /// Delete a project
    #[command(alias = "rm")]
    Delete { name: String },
}

#[derive(Debug, Clone, Args)]
pub struct ProjectPutArgs {
    pub name: String,
    #[arg(long)]
    pub repo: String,
    /// Default base branch
    #[arg(long)]
    pub base: Option<String>,
    /// Max tasks of this project running at once
    #[arg(long)]
    pub slots: Option<u32>,
    #[arg(long)]
    pub agent: Option<String>,
    #[arg(long)]
    pub model: Option<String>,
    /// Agents this project's tasks may use (comma separated)
    #[arg(long, value_delimiter = ',')]
    pub allowed_agents: Vec<String>,
    /// Stored credentials handed to this project's tasks (comma separated)
    #[arg(long, value_delimiter = ',')]
    pub credentials: Vec<String>,
    /// Check for tasks that name none (repeatable)
    #[arg(long = "check", value_name = "COMMAND")]
    pub checks: Vec<String>,
    /// Round limit for tasks that name none
    #[arg(long, value_name = "N")]
    pub max_rounds: Option<u32>,
    /// Default cost limit (USD) for this project's tasks that set none
    #[arg(long, value_name = "USD")]
    pub max_cost_usd: Option<f64>,
    /// Spend allowed per UTC day (USD); once reached, the project's tasks wait for the next day
    #[arg(long, value_name = "USD")]
    pub daily_budget_usd: Option<f64>,
    /// Agent profile for this project's tasks that name none
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    #[command(flatten)]
    pub github: GithubArgs,
}

/// A project's GitHub wiring (README, "GitHub"); none without `--github-repo`.
#[derive(Debug, Clone, Args)]
pub struct GithubArgs {
    /// GitHub repository (owner/name) whose webhook events go to this project
    #[arg(long, value_name = "OWNER/NAME")]
    pub github_repo: Option<String>,
    /// Stored credential holding the webhook secret
    #[arg(long, value_name = "CREDENTIAL", requires = "github_repo")]
    pub github_webhook_secret: Option<String>,
    /// Stored credential holding the token for GitHub's REST API
    #[arg(long, value_name = "CREDENTIAL", requires = "github_repo")]
    pub github_token: Option<String>,
    /// Authenticate as this GitHub App (its id) instead of with a token
    #[arg(
        long,
        value_name = "ID",
        requires = "github_repo",
        conflicts_with = "github_token"
    )]
    pub github_app_id: Option<u64>,
    /// Stored credential holding the GitHub App's private key (PEM)
    #[arg(long, value_name = "CREDENTIAL", requires = "github_app_id")]
    pub github_app_key: Option<String>,
    /// The App's installation id (looked up from the repository when absent)
    #[arg(long, value_name = "ID", requires = "github_app_id")]
    pub github_app_installation: Option<u64>,
    /// REST API root (GitHub Enterprise: https://HOST/api/v3)
    #[arg(long, value_name = "URL", requires = "github_repo")]
    pub github_api_url: Option<String>,
    /// Issue label that starts a task (default agentpool)
    #[arg(long, requires = "github_repo")]
    pub github_label: Option<String>,
    /// Comment command that starts a task (default /agentpool)
    #[arg(long, requires = "github_repo")]
    pub github_command: Option<String>,
    /// author_association values allowed to command (comma separated; default OWNER,MEMBER,COLLABORATOR)
    #[arg(long, value_delimiter = ',', requires = "github_repo")]
    pub github_allow: Vec<String>,
    /// Do not open pull requests
    #[arg(long, requires = "github_repo")]
    pub github_no_pull_requests: bool,
    /// Open pull requests as drafts
    #[arg(long, requires = "github_repo")]
    pub github_draft: bool,
    /// A failed check run on agentpool's pull request starts a follow-up fix task
    #[arg(long, requires = "github_repo")]
    pub github_check_run_follow_ups: bool,
    /// Most automatic follow-ups per pull request (default 3)
    #[arg(long, value_name = "N", requires = "github_repo")]
    pub github_max_follow_ups: Option<u32>,
}

#[derive(Debug, Clone, Args)]
pub struct ProjectBuildArgs {
    #[command(flatten)]
    pub project: ProjectPutArgs,
    /// What the agent should do
    pub prompt: String,
    /// Follow the build to its end and print the result
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// Store a credential; the value is read from stdin (or --from-env), never from a flag
    Put {
        name: String,
        /// Take the value from this environment variable
        #[arg(long, value_name = "VAR")]
        from_env: Option<String>,
    },
    /// List credential names (values are never shown)
    #[command(alias = "ls")]
    List,
    /// Delete a credential
    #[command(alias = "rm")]
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ProfilesCommand {
    /// Create or replace a profile from a JSON file (the API's body) and/or flags
    Put(ProfilePutArgs),
    /// List profiles
    #[command(alias = "ls")]
    List,
    /// Show a profile's settings
    Show { name: String },
    /// Delete a profile (tasks already submitted keep its settings)
    #[command(alias = "rm")]
    Delete { name: String },
}

#[derive(Debug, Clone, Args)]
pub struct ProfilePutArgs {
    pub name: String,
    /// Start from this JSON file (`-`: stdin), e.g. {"env": {...}, "mcp_servers": {...}}
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<PathBuf>,
    /// A non-secret variable for the agent, K=V (repeatable; keys go in credentials)
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env_pair)]
    pub env: Vec<(String, String)>,
    /// Default model
    #[arg(long)]
    pub model: Option<String>,
    /// Default turn limit
    #[arg(long)]
    pub max_turns: Option<u32>,
    /// A tool the agent may use (repeatable; the CLI's naming, e.g. mcp__docs__search)
    #[arg(long = "allowed-tool", value_name = "TOOL")]
    pub allowed_tools: Vec<String>,
    /// Text appended to the agent's system prompt
    #[arg(long, value_name = "TEXT")]
    pub append_system_prompt: Option<String>,
    /// An MCP server over stdio, NAME=COMMAND [ARG…] (repeatable; split on spaces)
    #[arg(long = "mcp-server", value_name = "NAME=COMMAND")]
    pub mcp_servers: Vec<String>,
}

/// Tokens are managed on the database directly (an operator's bootstrap step: the first admin
/// token cannot come from an API that needs a token).
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token; its value is printed once
    Create(TokenCreateArgs),
    /// List tokens (never their values)
    #[command(alias = "ls")]
    List,
    /// Revoke a token
    Revoke { id: String },
}

#[derive(Debug, Clone, Args)]
pub struct TokenCreateArgs {
    /// A name to recognise the token by
    pub name: String,
    #[arg(long, value_enum, default_value_t = TokenRole::Submitter)]
    pub role: TokenRole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenRole {
    Admin,
    Submitter,
    Worker,
}

impl TokenRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Submitter => "submitter",
            Self::Worker => "worker",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Keep the demo's directory (sample repository and database) instead of deleting it
    #[arg(long)]
    pub keep: bool,
    /// Skip the real agent task even when an agent CLI is installed
    #[arg(long)]
    pub no_agent: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    pub shell: clap_complete::Shell,
}

/// `K=V` split at the first `=`: the value is free text (a URL); the server checks the name.
fn parse_env_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?}: expected NAME=VALUE"))
}

pub fn parse_label(s: &str) -> Result<(String, String), String> {
    agentpool_core::spec::parse_label(s).map_err(|e| e.message)
}

/// `90`, `90s`, `10m`, `1h30m`, `2h` → seconds.
pub fn parse_duration_secs(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a duration like 90s, 10m or 1h30m");
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !num.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration_secs("90"), Ok(90));
        assert_eq!(parse_duration_secs("90s"), Ok(90));
        assert_eq!(parse_duration_secs("10m"), Ok(600));
        assert_eq!(parse_duration_secs("1h30m"), Ok(5400));
        assert!(parse_duration_secs("1x").is_err());
        assert!(parse_duration_secs("m").is_err());
        assert!(parse_duration_secs("10m5").is_err());
    }
}
