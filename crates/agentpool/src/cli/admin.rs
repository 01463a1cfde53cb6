//! The flags of the administration commands: projects, credentials, profiles, notifications
//! and tokens.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::parse_env_pair;

#[derive(Debug, Subcommand)]
pub enum ProjectsCommand {
    /// List projects
    #[command(alias = "ls")]
    List,
    /// Show one project
    Show { name: String },
    /// Create or replace a project (settings not given are cleared)
    #[command(alias = "create")]
    Put(Box<ProjectPutArgs>),
    /// Submit a build of a project (with --repo and any project flags: create or replace the
    /// project first, in the same call)
    #[command(mut_arg("repo", |a| a.required(false)))]
    Build(Box<ProjectBuildArgs>),
    /// Delete a project
    #[command(alias = "rm")]
    Delete { name: String },
}

#[derive(Debug, Clone, Args)]
pub struct ProjectPutArgs {
    /// Project name, which tasks name with --project
    pub name: String,
    /// Repository its tasks run in: a URL (https, ssh) or, on the embedded pool, a local path
    #[arg(long, required = true)]
    pub repo: Option<String>,
    /// Default base branch
    #[arg(long)]
    pub base: Option<String>,
    /// Max tasks of this project running at once
    #[arg(long)]
    pub slots: Option<u32>,
    /// Agent for this project's tasks that name none
    #[arg(long)]
    pub agent: Option<String>,
    /// Model for this project's tasks that name none
    #[arg(long)]
    pub model: Option<String>,
    /// Agents this project's tasks may use (comma separated)
    #[arg(long, value_delimiter = ',')]
    pub allowed_agents: Vec<String>,
    /// Stored credentials handed to this project's tasks (comma separated, or repeated)
    #[arg(long, alias = "credential", value_delimiter = ',')]
    pub credentials: Vec<String>,
    /// Check for tasks that name none (repeatable)
    #[arg(long = "check", value_name = "COMMAND")]
    pub checks: Vec<String>,
    /// Round limit for tasks that name none
    #[arg(long, value_name = "N")]
    pub max_rounds: Option<u32>,
    /// Default cost limit (USD) for this project's tasks that set none
    #[arg(long, value_name = "USD", value_parser = super::parse::parse_usd)]
    pub max_cost_usd: Option<f64>,
    /// Spend allowed per UTC day (USD); once reached, the project's tasks wait for the next day
    #[arg(long, value_name = "USD", value_parser = super::parse::parse_usd)]
    pub daily_budget_usd: Option<f64>,
    /// Agent profile for this project's tasks that name none
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    #[command(flatten)]
    pub github: GithubArgs,
    #[command(flatten)]
    pub forgejo: ForgejoArgs,
}

/// A project's Forgejo or Gitea wiring (docs/forgejo.md); none without `--forgejo-repo`.
#[derive(Debug, Clone, Args)]
pub struct ForgejoArgs {
    /// Forgejo or Gitea repository (owner/name) the project's builds open pull requests on
    #[arg(
        long,
        value_name = "OWNER/NAME",
        requires_all = ["forgejo_url", "forgejo_token"],
        conflicts_with = "github_repo"
    )]
    pub forgejo_repo: Option<String>,
    /// The instance's address (https://codeberg.org)
    #[arg(long, value_name = "URL", requires = "forgejo_repo")]
    pub forgejo_url: Option<String>,
    /// Stored credential holding the Forgejo access token
    #[arg(long, value_name = "CREDENTIAL", requires = "forgejo_repo")]
    pub forgejo_token: Option<String>,
    /// Open pull requests as work in progress (WIP: title)
    #[arg(long, requires = "forgejo_repo")]
    pub forgejo_draft: bool,
}

/// A project's GitHub wiring (docs/github.md); none without `--github-repo`.
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
    #[command(alias = "set")]
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
    #[command(alias = "create")]
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
    /// A tool the agent may use without asking (repeatable; the CLI's naming, e.g.
    /// mcp__docs__search). Agents already run with every tool approved: this restricts nothing
    #[arg(long = "allowed-tool", value_name = "TOOL")]
    pub allowed_tools: Vec<String>,
    /// Text appended to the agent's system prompt
    #[arg(long, value_name = "TEXT")]
    pub append_system_prompt: Option<String>,
    /// An MCP server over stdio, NAME=COMMAND [ARG…] (repeatable; split on spaces)
    #[arg(long = "mcp-server", value_name = "NAME=COMMAND")]
    pub mcp_servers: Vec<String>,
}

/// `agentpool tokens …`: on the server given, or else on the database directly (an operator's
/// bootstrap step: the first admin token cannot come from an API that needs a token).
#[derive(Debug, Args)]
pub struct TokensArgs {
    /// Database to manage the tokens in when no --server is given [default: SQLite in the data
    /// dir]
    #[arg(long, global = true, env = "AGENTPOOL_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: TokensCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token; its value is printed once
    Create(TokenCreateArgs),
    /// List tokens (never their values)
    #[command(alias = "ls")]
    List,
    /// Rotate a token: print its successor's value (same name, role and projects) and keep the
    /// old one working for a grace, so its users can move over
    Rotate {
        /// The token's id, as `tokens list` shows it, or its name when one live token has it
        #[arg(value_name = "ID|NAME")]
        id: String,
        /// How long the old token keeps working (0 to 30d)
        #[arg(long, value_parser = super::parse::parse_duration_secs, value_name = "DURATION", default_value = "1h")]
        grace: u64,
    },
    /// Revoke a token
    Revoke {
        /// The token's id, as `tokens list` shows it, or its name when one live token has it
        #[arg(value_name = "ID|NAME")]
        id: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct TokenCreateArgs {
    /// A name to recognise the token by
    pub name: String,
    /// What the token may do
    #[arg(long, value_enum, default_value_t = TokenRole::Submitter)]
    pub role: TokenRole,
    /// Limit the token to this project (repeatable, or comma-separated): a submitter token to
    /// its tasks, builds and schedules (it cannot change projects or use the dashboard), a
    /// worker token to claiming its tasks
    #[arg(long = "project", value_name = "PROJECT", value_delimiter = ',')]
    pub projects: Vec<String>,
    /// Make the token stop working after this long (e.g. 90d, 12h)
    #[arg(long, value_parser = super::parse::parse_nonzero_duration_secs, value_name = "DURATION")]
    pub expires_in: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenRole {
    /// Everything, including credentials, profiles and tokens
    Admin,
    /// Tasks, projects and builds
    Submitter,
    /// The worker protocol only (for `agentpool worker`)
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

#[derive(Debug, Subcommand)]
pub enum NotificationsCommand {
    /// Create or replace a notification: a URL POSTed each task end it matches (JSON, signed)
    #[command(alias = "create", after_help = super::NOTIFICATION_EXAMPLES)]
    Put(NotificationPutArgs),
    /// List notifications
    #[command(alias = "ls")]
    List,
    /// Show a notification (JSON)
    Show { name: String },
    /// List a notification's deliveries, newest first: delivered, failed, or to be retried
    Deliveries {
        name: String,
        /// How many, at most (1-1000)
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Send a notification a ping now (event `ping`, signed) and say whether it was delivered
    Test { name: String },
    /// Delete a notification and its deliveries (pending ones are not sent)
    #[command(alias = "rm")]
    Delete { name: String },
}

#[derive(Debug, Clone, Args)]
pub struct NotificationPutArgs {
    /// Name: 1-64 characters from [a-z0-9._-]
    pub name: String,
    /// Where to POST each task end (http or https)
    #[arg(long)]
    pub url: String,
    /// The end states to be told of (repeatable or comma-separated: succeeded, failed,
    /// canceled) [default: all three]
    #[arg(long, value_name = "STATE", value_delimiter = ',')]
    pub on: Vec<agentpool_core::TaskState>,
    /// Only tasks of this project [default: every task]
    #[arg(long)]
    pub project: Option<String>,
    /// Only tasks with this label (repeatable: tasks with all of them)
    #[arg(long = "label", value_name = "K=V", value_parser = super::parse_label)]
    pub labels: Vec<(String, String)>,
    /// Sign each delivery with this stored credential (header X-Agentpool-Signature-256:
    /// sha256=HMAC of the body)
    #[arg(long, value_name = "NAME")]
    pub secret_credential: Option<String>,
    /// What to POST: `json` (the event and the whole task) or `slack` ({"text": …}, one line
    /// a chat channel shows: Slack, Mattermost, Rocket.Chat, Discord's /slack URLs)
    #[arg(long, default_value = "json", value_name = "FORMAT")]
    pub format: agentpool_core::notification::Format,
}
