//! `agentpool run-task`: take over one claimed attempt (from its attempt file — in Kubernetes
//! the Secret the launcher made for it), heartbeat it, run it and report it under the worker
//! id that claimed it, fenced by its lease token. Works anywhere the server is reachable.
//! With `--check` it runs no attempt: it says whether this pod could run one (a launcher's
//! check Job, made from the same template, runs it to learn whether its set-up works again).

// The doc comments of its clap arguments are help text for a terminal (`<data dir>`).
#![allow(rustdoc::invalid_html_tags)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agentpool_client::{Client, ClientConfig};
use agentpool_core::WorkerId;
use agentpool_kube::AttemptFile;
use agentpool_runner::pipeline::Pipeline;
use agentpool_runner::self_check::self_check;
use agentpool_runner::{AttemptConfig, AttemptOutcome, run_attempt};
use clap::Args;

use crate::config::Settings;
use crate::embedded::agent_registry;
use crate::exit::{Exit, ExitCode};

#[derive(Debug, Clone, Args)]
pub struct RunTaskArgs {
    /// The attempt file: worker id, claim, lease and credentials (JSON, as the launcher writes it)
    #[arg(
        long,
        env = "AGENTPOOL_ATTEMPT_FILE",
        value_name = "FILE",
        required_unless_present = "check"
    )]
    pub attempt_file: Option<PathBuf>,
    /// Run no attempt: check that git, `sh` and the agents start here, that a task's directory
    /// can be made in the work dir, and that the server accepts the token; exit 0 if so
    #[arg(long, conflicts_with_all = ["attempt_file", "task", "attempt"], requires = "worker")]
    pub check: bool,
    /// With --check: the worker (launcher) id whose record the token must be able to read
    #[arg(long, env = "AGENTPOOL_WORKER_ID", value_name = "ID")]
    pub worker: Option<String>,
    /// Refuse to run unless the file is for this task (guards against a wrong mount)
    #[arg(long, env = "AGENTPOOL_TASK_ID", value_name = "ID")]
    pub task: Option<String>,
    /// Refuse to run unless the file is for this attempt number
    #[arg(long, env = "AGENTPOOL_ATTEMPT", value_name = "N")]
    pub attempt: Option<u32>,
    /// Scratch space for the workspace and private state [default: <data dir>/run-task]
    #[arg(long, env = "AGENTPOOL_WORK_DIR", value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// PEM file of a CA to trust for an https:// server with a private CA
    #[arg(long, env = "AGENTPOOL_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Agents this process may run (comma separated) [default: all installed]
    #[arg(long, value_delimiter = ',')]
    pub agents: Vec<String>,
    /// Seconds between heartbeats of the attempt's lease
    #[arg(long, env = "AGENTPOOL_HEARTBEAT_SECS", default_value_t = 10)]
    pub heartbeat_secs: u64,
    /// Seconds between SIGTERM and SIGKILL for the task's process group
    #[arg(long, default_value_t = 10)]
    pub kill_grace_secs: u64,
    /// Accept local repositories (paths and file:// URLs)
    #[arg(long, env = "AGENTPOOL_ALLOW_LOCAL_REPOS")]
    pub allow_local_repos: bool,
    #[command(flatten)]
    pub runner: crate::cli::RunnerArgs,
}

/// The CA to trust: a file, or the PEM itself in `AGENTPOOL_CA_CERT_PEM` (a Secret reference).
pub fn ca_pem(file: Option<&PathBuf>) -> anyhow::Result<Option<Vec<u8>>> {
    if let Some(f) = file {
        let pem = std::fs::read(f)
            .map_err(|e| Exit::new(ExitCode::Usage, format!("cannot read {}: {e}", f.display())))?;
        return Ok(Some(pem));
    }
    Ok(std::env::var("AGENTPOOL_CA_CERT_PEM")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .map(String::into_bytes))
}

pub async fn run_task(settings: &Settings, args: RunTaskArgs) -> anyhow::Result<ExitCode> {
    let usage = |m: String| Exit::new(ExitCode::Usage, m);
    if args.check {
        return check(settings, &args).await;
    }
    let Some(path) = &args.attempt_file else {
        return Err(usage("give the attempt with --attempt-file FILE (or --check)".into()).into());
    };
    let file = AttemptFile::read(path).map_err(|e| usage(e.to_string()))?;
    let claimed = &file.work.claimed;
    if let Some(t) = &args.task
        && *t != claimed.lease.task_id.to_string()
    {
        return Err(usage(format!(
            "the attempt file is for task {}, not {t}",
            claimed.lease.task_id
        ))
        .into());
    }
    if let Some(n) = args.attempt
        && n != claimed.attempt
    {
        return Err(usage(format!(
            "the attempt file is for attempt {}, not {n}",
            claimed.attempt
        ))
        .into());
    }
    let api = client(settings, &args)?;
    let cfg = attempt_config(settings, &args)?;
    let agents = agent_registry(&args.agents, None)?;

    let (terminate, signal) = super::pool::stop_on_signal();
    let task = claimed.lease.task_id;
    let attempt = claimed.attempt;
    tracing::info!(%task, attempt, worker = %file.worker_id, "running attempt");
    let outcome = run_attempt(Arc::new(api), file.worker_id, file.work, agents, cfg, terminate).await;
    signal.abort();
    let line = match &outcome {
        AttemptOutcome::Succeeded => "succeeded".to_string(),
        AttemptOutcome::Failed(c) => format!("failed ({c})"),
        AttemptOutcome::Retrying { class, attempt, .. } => {
            format!("failed ({class}); the task is queued again for attempt {attempt}")
        }
        AttemptOutcome::Lost => "lost its lease (another attempt owns the task)".to_string(),
        AttemptOutcome::Unreported => "could not be reported".to_string(),
        AttemptOutcome::Refused(why) => {
            format!("was stopped: the server no longer accepts this pod's token ({why})")
        }
    };
    if settings.json() {
        super::print_json(&serde_json::json!({
            "task_id": task, "attempt": attempt, "outcome": line,
        }))?;
    } else {
        eprintln!("task {task} attempt {attempt} {line}");
    }
    // Exit 0 whenever the server heard the outcome: a failed pod then means "not reported".
    match outcome {
        o if o.reported() => Ok(ExitCode::Success),
        AttemptOutcome::Refused(why) => Err(Exit::new(
            ExitCode::TokenRefused,
            format!("task {task} attempt {attempt}: the server no longer accepts this pod's token ({why})"),
        )
        .into()),
        _ => Err(Exit::new(
            ExitCode::Connection,
            format!("task {task} attempt {attempt}: the outcome could not be reported"),
        )
        .into()),
    }
}

/// The client for the server the pod reports to.
fn client(settings: &Settings, args: &RunTaskArgs) -> anyhow::Result<Client> {
    Ok(server_client(settings, args.ca_cert.as_ref())?.0)
}

/// The client of a process in the cluster (pod, launcher) for the server it works for, and
/// that server's URL: `--server` and `--token`, trusting `ca_cert` or [`ca_pem`]'s variable.
pub fn server_client(settings: &Settings, ca_cert: Option<&PathBuf>) -> anyhow::Result<(Client, String)> {
    let usage = |m: String| Exit::new(ExitCode::Usage, m);
    let server = settings
        .server
        .clone()
        .ok_or_else(|| usage("give the server with --server URL (or AGENTPOOL_SERVER)".into()))?;
    let mut cc = ClientConfig::new(&server).token(settings.token.clone());
    cc.ca_pem = ca_pem(ca_cert)?;
    let client = Client::with_config(cc).map_err(|e| usage(e.to_string()))?;
    Ok((client, server))
}

fn attempt_config(settings: &Settings, args: &RunTaskArgs) -> anyhow::Result<AttemptConfig> {
    let dir = match args.work_dir.clone() {
        Some(d) => crate::config::absolute(d)?,
        None => settings.data_dir.join("run-task"),
    };
    let mut cfg = AttemptConfig::new(&dir);
    cfg.heartbeat_interval = Duration::from_secs(args.heartbeat_secs.max(1));
    cfg.pipeline.kill_grace = Duration::from_secs(args.kill_grace_secs);
    args.runner.apply(&mut cfg.pipeline);
    cfg.pipeline.allow_file_repos = args.allow_local_repos;
    Ok(cfg)
}

/// `run-task --check`: what an attempt needs of this pod, without one. The last line says
/// why not (Kubernetes keeps it as the container's termination message, which the launcher
/// quotes); a token the server refuses exits with the code the launcher reads as such.
async fn check(settings: &Settings, args: &RunTaskArgs) -> anyhow::Result<ExitCode> {
    let worker = args
        .worker
        .clone()
        .ok_or_else(|| Exit::new(ExitCode::Usage, "--check needs --worker ID"))?;
    let worker = WorkerId::parse(worker).map_err(|e| Exit::new(ExitCode::Usage, e.to_string()))?;
    let api = client(settings, args)?;
    let cfg = attempt_config(settings, args)?;
    let agents = agent_registry(&args.agents, None)?;
    let names = agents.names();
    std::fs::create_dir_all(&cfg.pipeline.workspace.root)?;
    std::fs::create_dir_all(cfg.pipeline.state_dir.join("credentials"))?;
    let pipeline = Pipeline::new(cfg.pipeline, agents);
    if let Err(why) = self_check(&pipeline, None).await {
        return Err(Exit::new(ExitCode::Failed, format!("this pod cannot run an attempt: {why}")).into());
    }
    match api.get_worker(&worker).await {
        // Unknown is fine: the token was accepted, which is what is checked.
        Ok(_) | Err(agentpool_client::Error::NotFound(_)) => {}
        Err(e) if agentpool_runner::api::is_refusal(&e) => {
            return Err(Exit::new(
                ExitCode::TokenRefused,
                format!("the server does not accept this pod's token: {e}"),
            )
            .into());
        }
        Err(e) => {
            return Err(Exit::new(
                ExitCode::Connection,
                format!("this pod cannot reach the server: {e}"),
            )
            .into());
        }
    }
    let offered = if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    };
    eprintln!(
        "this pod can run attempts: git, sh and its agents ({offered}) start, and the server accepts its token"
    );
    Ok(ExitCode::Success)
}
