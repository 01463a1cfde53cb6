//! `agentpool launcher`: a worker that runs each claimed attempt as a Kubernetes Job (its pod
//! runs `agentpool run-task`). Configuration: flags plus a JSON Job template file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agentpool_core::{AgentInfo, WorkerId};
use agentpool_kube::{JobTemplate, LauncherConfig, run_launcher};
use clap::Args;

use crate::config::Settings;
use crate::exit::{Exit, ExitCode};

#[derive(Debug, Clone, Args)]
pub struct LauncherArgs {
    /// Launcher id: stable across restarts (Jobs are adopted by it) and a valid label value
    #[arg(long, env = "AGENTPOOL_LAUNCHER_ID", default_value = "agentpool-launcher")]
    pub id: String,
    /// Job template (JSON): image, server URL for pods, token Secret reference, resources,
    /// nodeSelector, tolerations, env, TTL, grace period
    #[arg(long, env = "AGENTPOOL_LAUNCHER_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    /// Namespace for the Jobs [default: the pod's own namespace, or the kubeconfig's]
    #[arg(long, env = "AGENTPOOL_NAMESPACE")]
    pub namespace: Option<String>,
    /// Jobs run at once (the launcher's slots)
    #[arg(long, env = "AGENTPOOL_SLOTS", default_value_t = 4)]
    pub slots: u32,
    /// Labels this launcher offers (k=v); a task only runs where all its labels are offered
    #[arg(long = "labels", alias = "label", env = "AGENTPOOL_LABELS", value_name = "K=V", value_delimiter = ',',
        value_parser = crate::cli::parse_label)]
    pub labels: Vec<(String, String)>,
    /// Agents the image has (comma separated) [default: every built-in agent]
    #[arg(long, env = "AGENTPOOL_AGENTS", value_delimiter = ',')]
    pub agents: Vec<String>,
    /// Take only tasks of these projects (comma separated or repeated) [default: any; with a
    /// worker token limited to projects, those]
    #[arg(
        long = "project",
        env = "AGENTPOOL_PROJECTS",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub projects: Vec<String>,
    /// Seconds between listings of Jobs and pods (also the claim long-poll)
    #[arg(long, env = "AGENTPOOL_RECONCILE_SECS", default_value_t = 5)]
    pub reconcile_secs: u64,
    /// Seconds between heartbeats of the Jobs' leases
    #[arg(long, env = "AGENTPOOL_HEARTBEAT_SECS", default_value_t = 10)]
    pub heartbeat_secs: u64,
    /// Stop claiming (and report unhealthy) after this many attempts in a row failed on the
    /// launcher's set-up (image pull, missing Secret, admission refusal, refused pod token);
    /// 0: never
    #[arg(
        long,
        env = "AGENTPOOL_UNHEALTHY_AFTER",
        value_name = "N",
        default_value_t = 3
    )]
    pub unhealthy_after: u32,
    /// Seconds an unhealthy launcher waits before it runs a check Job (a pod of its template
    /// running `run-task --check`), doubled after each that fails, up to 30 minutes; claiming
    /// resumes once one succeeds. 0: never (a restart is needed)
    #[arg(
        long,
        env = "AGENTPOOL_RECHECK_SECS",
        value_name = "SECS",
        default_value_t = 60
    )]
    pub recheck_secs: u64,
    /// PEM file of a CA to trust for an https:// server with a private CA
    #[arg(long, env = "AGENTPOOL_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

/// The launcher's configuration from its flags and template file.
pub fn launcher_config(args: &LauncherArgs, namespace: String) -> anyhow::Result<LauncherConfig> {
    let usage = |m: String| Exit::new(ExitCode::Usage, m);
    let id = WorkerId::parse(args.id.clone()).map_err(|e| usage(e.to_string()))?;
    let bytes = std::fs::read(&args.config)
        .map_err(|e| usage(format!("cannot read {}: {e}", args.config.display())))?;
    let template: JobTemplate = serde_json::from_slice(&bytes).map_err(|e| {
        usage(format!(
            "{} is not a valid Job template: {e}",
            args.config.display()
        ))
    })?;
    let mut cfg = LauncherConfig::new(id, namespace, template, args.slots);
    cfg.labels = args.labels.iter().cloned().collect();
    cfg.projects = args.projects.clone();
    let names = if args.agents.is_empty() {
        agentpool_agents::Registry::builtin(&agentpool_agents::AgentConfig::from_env()).names()
    } else {
        args.agents.clone()
    };
    cfg.agents = names.into_iter().map(AgentInfo::unversioned).collect();
    cfg.reconcile_interval = Duration::from_secs(args.reconcile_secs.max(1));
    cfg.heartbeat_interval = Duration::from_secs(args.heartbeat_secs.max(1));
    cfg.unhealthy_after = args.unhealthy_after;
    cfg.recheck_after = Duration::from_secs(args.recheck_secs);
    Ok(cfg)
}

/// A client for the cluster the process runs in (or the current kubeconfig context), and the
/// namespace to work in: `namespace` when given, else the client's default.
pub async fn kube_client(namespace: Option<String>) -> Result<(kube::Client, String), Exit> {
    let kube = kube::Client::try_default().await.map_err(|e| {
        Exit::new(
            ExitCode::Connection,
            format!("cannot reach the Kubernetes API: {e}"),
        )
    })?;
    let namespace = namespace.unwrap_or_else(|| kube.default_namespace().to_string());
    Ok((kube, namespace))
}

pub async fn launcher(settings: &Settings, args: LauncherArgs) -> anyhow::Result<ExitCode> {
    let (api, server) = super::run_task::server_client(settings, args.ca_cert.as_ref())?;
    // Read the template before touching the cluster: a bad file is a usage error.
    let probe = launcher_config(&args, String::new())?;
    let (kube, namespace) = kube_client(args.namespace.clone()).await?;
    let cfg = LauncherConfig { namespace, ..probe };

    let (stop, signal) = super::pool::stop_on_signal();
    tracing::info!(server = %server, namespace = %cfg.namespace, slots = cfg.slots, "launcher starting");
    let result = run_launcher(cfg, Arc::new(api), kube, stop).await;
    signal.abort();
    let summary = result.map_err(|e| Exit::new(ExitCode::Connection, e.to_string()))?;
    eprintln!(
        "launcher stopped: {} Jobs created, {} adopted, {} attempts failed by the launcher",
        summary.created, summary.adopted, summary.failed
    );
    if summary.recovered > 0 {
        eprintln!(
            "a check Job found its set-up working again {}, and claiming resumed",
            agentpool_core::render::count(summary.recovered, "time", "times")
        );
    }
    if let Some(why) = &summary.unhealthy {
        eprintln!("it had stopped claiming: {why}");
    }
    Ok(ExitCode::Success)
}
