//! `agentpool worker`: one worker process that claims from a server over HTTP.

use std::sync::Arc;
use std::time::Duration;

use agentpool_core::WorkerId;
use agentpool_runner::{WorkerConfig, run_worker};
use tokio_util::sync::CancellationToken;

use crate::cli::WorkerArgs;
use crate::config::Settings;
use crate::embedded::offered_agents;
use crate::exit::{Exit, ExitCode};

/// `agentpool worker`: a worker that claims from a server over HTTP until SIGTERM/SIGINT, then
/// drains (stops claiming, lets running tasks finish up to the grace period, cancels the rest)
/// and deregisters.
pub async fn worker(settings: &Settings, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let server = match &settings.server {
        Some(s) => s.clone(),
        None => match crate::config::read_up_state(&settings.data_dir) {
            Some(up) => up.url,
            None => {
                return Err(Exit::new(
                    ExitCode::Usage,
                    "give the server to work for with --server URL (or AGENTPOOL_SERVER)",
                )
                .into());
            }
        },
    };
    let api = settings
        .client(&server)
        .map_err(|e| Exit::new(ExitCode::Usage, e.to_string()))?;
    let dir = match args.work_dir.clone() {
        Some(d) => crate::config::absolute(d)?,
        None => settings.data_dir.join("work"),
    };
    let mut cfg = WorkerConfig::new(&dir, args.concurrency);
    if let Some(id) = &args.id {
        cfg.id = Some(WorkerId::parse(id.clone()).map_err(|e| Exit::new(ExitCode::Usage, e.to_string()))?);
    }
    cfg.labels = args.labels.iter().cloned().collect();
    cfg.projects = args.projects.clone();
    cfg.agents = offered_agents(&args.agents, None)?;
    cfg.drain_grace = Duration::from_secs(args.drain_grace_secs);
    cfg.heartbeat_interval = Duration::from_secs(args.heartbeat_secs);
    cfg.unhealthy_after = args.unhealthy_after;
    cfg.recheck_after = Duration::from_secs(args.recheck_secs);
    // A persistent worker keeps bare mirrors so later tasks on the same repo fetch, not clone.
    let mirrors = match &args.mirror_dir {
        Some(d) => crate::config::absolute(d.clone())?,
        None => dir.join("mirrors"),
    };
    cfg.pipeline.workspace.mirror_dir = Some(mirrors);
    cfg.mirror_limits = agentpool_runner::mirror_cache::CacheLimits {
        max_age: args
            .mirror_max_age_days
            .map(|d| Duration::from_secs(d.saturating_mul(86_400))),
        max_bytes: args
            .mirror_max_size_mib
            .filter(|m| *m > 0)
            .map(|m| m.saturating_mul(1024 * 1024)),
    };
    cfg.stay_drained = args.stay_drained;
    args.runner.apply(&mut cfg.pipeline);
    cfg.pipeline.allow_file_repos = args.allow_local_repos;
    let access = crate::cli::AgentAccessArgs {
        agent_env: args.agent_env.clone(),
        use_local_login: Vec::new(),
    };
    cfg.pipeline
        .secret_env
        .extend(crate::access::AgentAccess::resolve(&access)?.env);

    let stop = CancellationToken::new();
    let probe_stop = CancellationToken::new();
    if let Some(addr) = args.health_listen {
        let (reporter, health) = agentpool_runner::HealthReporter::new();
        cfg.health = Some(reporter.clone());
        let bound = super::probe::serve(addr, health, reporter, probe_stop.clone())
            .await
            .map_err(|e| Exit::new(ExitCode::Usage, format!("cannot listen on {addr}: {e}")))?;
        // On stderr, so that `--output json` keeps stdout to the one summary document.
        eprintln!("health probe on http://{bound}");
    }
    let _stop_probe = probe_stop.drop_guard();
    let signal = {
        let stop = stop.clone();
        let stop_now = cfg.stop_now.clone();
        let mut signals = super::pool::Signals::new();
        tokio::spawn(async move {
            signals.next().await;
            tracing::info!("signal received: draining (a second one stops running tasks now)");
            stop.cancel();
            signals.next().await;
            tracing::info!("second signal received: stopping running tasks now");
            stop_now.cancel();
        })
    };
    tracing::info!(server = %server, slots = args.concurrency, "worker starting");
    let result = run_worker(cfg, Arc::new(api), stop).await;
    signal.abort();
    let summary = result.map_err(|e| Exit::new(ExitCode::Connection, e.to_string()))?;
    if settings.json() {
        super::print_json(&serde_json::json!({
            "worker_id": summary.worker_id,
            "succeeded": summary.succeeded,
            "failed": summary.failed,
            "canceled": summary.canceled,
            "handed_back": summary.handed_back,
            "lost": summary.lost,
            "unreported": summary.unreported,
        }))?;
    } else {
        match &summary.worker_id {
            Some(id) => {
                // A hand-back used none of the task's attempts: it runs again elsewhere.
                let handed_back = match summary.handed_back {
                    0 => String::new(),
                    n => format!(", {n} handed back"),
                };
                eprintln!(
                    "worker {id} stopped: {} succeeded, {} failed, {} canceled{handed_back}",
                    summary.succeeded, summary.failed, summary.canceled
                )
            }
            None => eprintln!("worker stopped before it could register with {server}"),
        }
    }
    Ok(ExitCode::Success)
}
