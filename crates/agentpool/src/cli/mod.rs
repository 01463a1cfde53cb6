//! The command line: every subcommand and flag of `agentpool`, as clap types.
//!
//! Only parsing lives here; what each command does is in `commands/`.

// The doc comments of clap types are the command's help text, written for a terminal
// (`<task id>`, bare URLs, `[default: …]`), not rustdoc markup.
#![allow(
    rustdoc::invalid_html_tags,
    rustdoc::bare_urls,
    rustdoc::broken_intra_doc_links
)]

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod admin;
#[cfg(test)]
mod doc_examples;
mod parse;
mod task;

pub use admin::*;
use parse::parse_env_pair;
pub use parse::{parse_duration_secs, parse_error_class, parse_label, parse_overlap};
pub use task::*;

/// Run AI coding agents at scale: a durable work queue and a pool of workers.
#[derive(Debug, Parser)]
#[command(name = "agentpool", version, about, long_about = None)]
#[command(after_help = ROOT_AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The settings' order and the exit codes, after the root's help.
pub const ROOT_AFTER_HELP: &str = "\
Settings:
  each comes from its flag, else its AGENTPOOL_ variable, else <data dir>/config.json (a JSON
  object whose keys are the variables' names without AGENTPOOL_, in lower case, such as
  {\"lease_ttl_secs\": 120}), else the default

Exit codes:
  0  success (for run / submit --wait: the task succeeded)
  1  the task failed, or the command could not do what was asked
  2  usage error: bad flags or input the server refused as invalid
  3  the task was canceled
  4  the server could not be reached or answered with an error
  130  interrupted (Ctrl-C) while following a task on a server: the task goes on";

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

const SCHEDULE_EXAMPLES: &str = "\
Examples:
  agentpool schedules put deps --cron '0 6 * * 1' --time-zone Europe/Berlin --project web \\
      --agent claude-code -p 'update the dependencies and fix what breaks'
  agentpool schedules put nightly-tests --cron @daily --repo https://github.com/o/r.git \\
      --command 'make test' --no-commit";

const NOTIFICATION_EXAMPLES: &str = "\
Examples:
  printenv HOOK_SECRET | agentpool credentials put hook-secret
  agentpool notifications put ops --url https://ci.example.com/agentpool --on failed,canceled \\
      --project web --secret-credential hook-secret
  agentpool notifications deliveries ops";

/// Flags every subcommand accepts. Values come from the flag, else the `AGENTPOOL_*`
/// environment variable, else the config file in the data directory.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
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
    /// Format of the log on stderr: text, or json (one object a line, for a log collector)
    #[arg(long, global = true, env = "AGENTPOOL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
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
    /// The queue at a glance: queued tasks (due, able to run now), running tasks and workers by
    /// status — of the whole pool, or of the workers a selector names (the figures a
    /// WorkerPool is sized from)
    Status(StatusArgs),
    /// Manage projects (named repository configurations)
    #[command(subcommand)]
    Projects(ProjectsCommand),
    /// Manage stored credentials (API keys, git tokens), handed only to the tasks that name them
    #[command(subcommand)]
    Credentials(CredentialsCommand),
    /// Manage agent profiles (non-secret agent settings and MCP servers that tasks name)
    #[command(subcommand)]
    Profiles(ProfilesCommand),
    /// Manage schedules: tasks submitted on a cron expression (nightly, weekly, …)
    #[command(subcommand)]
    Schedules(SchedulesCommand),
    /// Manage notifications: URLs told of every task that ends (chat hooks, CI, ticket systems)
    #[command(subcommand)]
    Notifications(NotificationsCommand),
    /// Manage API tokens
    Tokens(TokensArgs),
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
    /// List the agents this machine can run: where each CLI was found, its version, and
    /// whether a local login (--use-local-login) is there
    Agents,
    /// Print shell completions
    Completions(CompletionsArgs),
}

impl Command {
    /// Whether the command runs a server, a worker or a controller, and so logs as a service
    /// (the others print what they were asked for, with warnings only). Every command is
    /// named here, so a new one must be placed.
    pub fn is_service(&self) -> bool {
        match self {
            Self::Up(_)
            | Self::Serve(_)
            | Self::Worker(_)
            | Self::Migrate(_)
            | Self::Launcher(_)
            | Self::RunTask(_)
            | Self::Operator(_) => true,
            Self::Run(_)
            | Self::Demo(_)
            | Self::Submit(_)
            | Self::Tasks(_)
            | Self::Workers(_)
            | Self::Status(_)
            | Self::Projects(_)
            | Self::Credentials(_)
            | Self::Profiles(_)
            | Self::Schedules(_)
            | Self::Notifications(_)
            | Self::Tokens(_)
            | Self::Crd
            | Self::Agents
            | Self::Completions(_) => false,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// In-process workers to start
    #[arg(long, env = "AGENTPOOL_WORKERS", default_value_t = 2)]
    pub workers: u32,
    /// Tasks each worker runs at once (1-1000)
    #[arg(long, env = "AGENTPOOL_CONCURRENCY", default_value_t = 2,
        value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub concurrency: u32,
    /// Address to listen on; the embedded pool only listens on loopback
    #[arg(long, env = "AGENTPOOL_LISTEN", default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,
    /// Database URL [default: sqlite in the data dir]
    #[arg(long, env = "AGENTPOOL_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// Agents the workers may run (comma separated; one whose CLI is not installed is left out,
    /// with a warning) [default: all installed, plus command]
    #[arg(long, env = "AGENTPOOL_AGENTS", value_delimiter = ',')]
    pub agents: Vec<String>,
    /// Labels the workers carry (k=v); a task only runs on workers with all its labels
    #[arg(long = "labels", alias = "label", env = "AGENTPOOL_LABELS", value_name = "K=V",
        value_delimiter = ',', value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    #[command(flatten)]
    pub access: AgentAccessArgs,
    #[command(flatten)]
    pub runner: RunnerArgs,
    #[command(flatten)]
    pub retention: RetentionArgs,
}

/// How long a server (`up`, `serve`) keeps finished tasks.
#[derive(Debug, Clone, Args)]
pub struct RetentionArgs {
    /// Days finished tasks (with their events and attempts) are kept before the maintenance
    /// pass purges them
    #[arg(long, env = "AGENTPOOL_RETENTION_DAYS", value_name = "DAYS", default_value_t = 7,
        value_parser = clap::value_parser!(u64).range(1..=3650))]
    pub retention_days: u64,
}

impl RetentionArgs {
    pub fn retention(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.retention_days.saturating_mul(24 * 3600))
    }
}

/// What every runner of tasks (`worker`, `run-task`, and the workers of `up` and of a `run`'s
/// transient pool) is told about recording their output, writing their commits and sending
/// git credentials.
#[derive(Debug, Clone, Args)]
pub struct RunnerArgs {
    /// MiB of output lines (stdout, stderr) a task's attempt records as they come; past it a
    /// line says so, and the last 256 KiB are recorded when the run ends
    #[arg(long, env = "AGENTPOOL_MAX_LOG_MIB", value_name = "MIB", default_value_t = agentpool_runner::log_limit::DEFAULT_HEAD_MIB,
        value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_log_mib: u64,
    /// Author (and committer) of the commits tasks make, as `Name <email>` [default: agentpool
    /// <agentpool@localhost>]
    #[arg(long, env = "AGENTPOOL_COMMIT_AUTHOR", value_name = "NAME <EMAIL>", value_parser = parse::parse_author)]
    pub commit_author: Option<(String, String)>,
    /// Send a task's git credential over plain http:// to another machine (refused by
    /// default: it would cross the network in clear text; loopback is always allowed)
    #[arg(long, env = "AGENTPOOL_ALLOW_HTTP_CREDENTIALS")]
    pub allow_http_credentials: bool,
}

impl Default for RunnerArgs {
    fn default() -> Self {
        Self {
            max_log_mib: agentpool_runner::log_limit::DEFAULT_HEAD_MIB,
            commit_author: None,
            allow_http_credentials: false,
        }
    }
}

impl RunnerArgs {
    pub fn apply(&self, pipeline: &mut agentpool_runner::PipelineConfig) {
        pipeline.log_limit.head_bytes = self.max_log_mib << 20;
        // Unset, the pipeline's own default stands.
        if let Some((name, email)) = self.commit_author.clone() {
            (pipeline.commit_author_name, pipeline.commit_author_email) = (name, email);
        }
        pipeline.allow_http_credentials = self.allow_http_credentials;
    }
}

/// What an embedded pool's tasks may take from the caller: named variables and local logins.
/// Nothing is inherited without these; `worker` has `--agent-env` alone, `serve` neither.
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
    #[arg(long, env = "AGENTPOOL_PUBLIC_URL", value_name = "URL", value_parser = parse::parse_http_url)]
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
    /// Events one attempt may record (0: no limit); past it, the worker's appends are refused
    /// (413) and the task goes on
    #[arg(
        long,
        env = "AGENTPOOL_MAX_EVENTS_PER_ATTEMPT",
        default_value_t = 250_000,
        value_name = "N"
    )]
    pub max_events_per_attempt: u64,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// Longest timeout a task may ask for (its timeout_secs, a check's), in seconds: from the
    /// 30 minutes a task that asks for none runs for, to the 24 hours agents accept
    #[arg(long, env = "AGENTPOOL_MAX_TIMEOUT_SECS", value_name = "SECS",
        default_value_t = agentpool_core::spec::MAX_TIMEOUT_SECS,
        value_parser = clap::value_parser!(u64).range(1800..=agentpool_core::spec::MAX_TIMEOUT_SECS))]
    pub max_timeout_secs: u64,
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Tasks run at once (1-1000)
    #[arg(long, short = 'c', env = "AGENTPOOL_CONCURRENCY", default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub concurrency: u32,
    /// Labels this worker carries (k=v); a task only runs on workers with all its labels
    #[arg(long = "labels", alias = "label", env = "AGENTPOOL_LABELS", value_name = "K=V",
        value_delimiter = ',', value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Take only tasks of these projects (comma separated or repeated) [default: any; with a
    /// worker token limited to projects, those]
    #[arg(
        long = "project",
        env = "AGENTPOOL_PROJECTS",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub projects: Vec<String>,
    /// Agents this worker may run (comma separated; one whose CLI is not installed is left out,
    /// with a warning) [default: all installed, plus command]
    #[arg(long, env = "AGENTPOOL_AGENTS", value_delimiter = ',')]
    pub agents: Vec<String>,
    /// Worker id. A restarted worker re-registers under its id, and the server at once retries
    /// what its previous life was running [default: host name + suffix, made on first start
    /// and kept in the work dir for the next]
    #[arg(long, env = "AGENTPOOL_WORKER_ID")]
    pub id: Option<String>,
    /// Where workspaces and the git mirror cache live [default: <data dir>/work]
    #[arg(long, env = "AGENTPOOL_WORK_DIR", value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Seconds running tasks may take to finish after SIGTERM before they are stopped and handed
    /// back to the queue (INFRA_ERROR, without using an attempt); a second signal stops them now
    #[arg(long, env = "AGENTPOOL_DRAIN_GRACE_SECS", default_value_t = 300)]
    pub drain_grace_secs: u64,
    /// Seconds between heartbeats, which extend the leases of running tasks (shortened to a
    /// third of the server's --lease-ttl-secs when that is less, with a warning)
    #[arg(long, env = "AGENTPOOL_HEARTBEAT_SECS", default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub heartbeat_secs: u64,
    /// Accept tasks on local repositories (paths and file:// URLs) from the server (the worker
    /// carries the label agentpool/local-repos=true, which those tasks require)
    #[arg(long, env = "AGENTPOOL_ALLOW_LOCAL_REPOS")]
    pub allow_local_repos: bool,
    /// Pass this variable from the worker's environment to every task it runs (comma separated
    /// or repeated; e.g. ANTHROPIC_API_KEY from a Kubernetes Secret). Its value is masked in
    /// events like a stored credential; a task's own credential of that name wins
    #[arg(
        long = "agent-env",
        env = "AGENTPOOL_AGENT_ENV",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub agent_env: Vec<String>,
    /// Serve a health probe here: /healthz while the process runs, /readyz (200) only while
    /// the worker is registered and claiming (503 starting, draining or unhealthy)
    #[arg(long, env = "AGENTPOOL_HEALTH_LISTEN", value_name = "ADDR")]
    pub health_listen: Option<std::net::SocketAddr>,
    /// Keep the bare mirror cache here (e.g. a persistent volume) [default: <work dir>/mirrors]
    #[arg(long, env = "AGENTPOOL_MIRROR_DIR", value_name = "DIR")]
    pub mirror_dir: Option<PathBuf>,
    /// Prune mirrors not used for this many days
    #[arg(long, env = "AGENTPOOL_MIRROR_MAX_AGE_DAYS", value_name = "DAYS")]
    pub mirror_max_age_days: Option<u64>,
    /// Prune the least recently used mirrors while the cache is larger than this (MiB)
    #[arg(long, env = "AGENTPOOL_MIRROR_MAX_SIZE_MIB", value_name = "MIB")]
    pub mirror_max_size_mib: Option<u64>,
    /// Stop claiming (and report unhealthy) after this many tasks in a row failed because git
    /// or an agent could not be started (after one, when the worker's own check finds git or
    /// the agent will not start); stop running an agent after this many whose provider refused
    /// this worker's own key (unhealthy if no other agent is left); 0: never
    #[arg(
        long,
        env = "AGENTPOOL_UNHEALTHY_AFTER",
        value_name = "N",
        default_value_t = 3
    )]
    pub unhealthy_after: u32,
    /// Seconds an unhealthy worker waits before it checks whether git and its agents start
    /// again, doubled after each check that fails, up to 30 minutes; claiming resumes once one
    /// passes. 0: never (a restart is needed)
    #[arg(
        long,
        env = "AGENTPOOL_RECHECK_SECS",
        value_name = "SECS",
        default_value_t = 60
    )]
    pub recheck_secs: u64,
    /// After a drain the server asks for, stay registered until stopped instead of exiting
    /// (for supervisors that restart exited workers, e.g. a WorkerPool's StatefulSet)
    #[arg(long, env = "AGENTPOOL_STAY_DRAINED")]
    pub stay_drained: bool,
    #[command(flatten)]
    pub runner: RunnerArgs,
}

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Database URL [default: sqlite in the data dir]
    #[arg(long, env = "AGENTPOOL_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn a_commit_author_is_a_name_and_an_email() {
        assert_eq!(
            parse::parse_author(" Pool Bot <bot@example.com> "),
            Ok(("Pool Bot".to_string(), "bot@example.com".to_string()))
        );
        for bad in [
            "Pool Bot",
            "<bot@example.com>",
            "Bot <>",
            "Bot <a<b>",
            "Bo\nt <b@x>",
            "Bot <b@x> x",
        ] {
            let err = parse::parse_author(bad).unwrap_err();
            assert!(err.contains("expected an author like"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
