//! The embedded pool: the API server on SQLite in the data dir plus workers in
//! this process, without auth on loopback. Used by `agentpool up`, a transient `agentpool run`,
//! and `agentpool demo`; and which agents a worker in this process may run.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agentpool_agents::{AgentConfig, Registry};
use agentpool_client::Client;
use agentpool_core::WorkerId;
use agentpool_runner::{HealthReporter, WorkerApi, WorkerConfig, WorkerHealth, run_worker};

use agentpool_server::{AuthMode, RunningServer, ServerConfig, ServerKey};
use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::access::AgentAccess;
use crate::cli::RunnerArgs;
use crate::config::{Settings, redact_url};
use crate::exit::{Exit, ExitCode};

#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    pub data_dir: PathBuf,
    pub database_url: String,
    pub listen: SocketAddr,
    pub workers: u32,
    pub concurrency: u32,
    /// Agents the workers may run; empty: every shipped adapter plus `command`.
    pub agents: Vec<String>,
    /// Labels the workers carry (`up --labels`).
    pub labels: Vec<(String, String)>,
    /// Extra environment for every task (the demo's scripted model endpoint).
    pub extra_env: BTreeMap<String, String>,
    /// Where agent CLIs are looked up first; `AGENTPOOL_AGENT_BIN_DIR` when `None`.
    pub agent_bin_dir: Option<PathBuf>,
    /// What the caller opted to hand its tasks (`--agent-env`, `--use-local-login`).
    pub access: AgentAccess,
    /// What the workers record of their output and whom they commit as (`--max-log-mib`,
    /// `--commit-author`).
    pub runner: RunnerArgs,
    /// How long finished tasks are kept (`--retention-days`).
    pub retention: Duration,
    /// Whether the workers ask their agent CLIs' versions (to show them): not for a pool
    /// that lives for one task, where four Node.js CLIs starting at once would slow the task.
    pub agent_versions: bool,
}

impl EmbeddedOptions {
    /// A transient pool for one `run`: the data dir's database, a free loopback port.
    pub fn transient(settings: &Settings, workers: u32) -> Self {
        Self {
            data_dir: settings.data_dir.clone(),
            database_url: settings.database_url(None),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers: workers.max(1),
            concurrency: 1,
            agents: Vec::new(),
            labels: Vec::new(),
            extra_env: BTreeMap::new(),
            agent_bin_dir: None,
            access: AgentAccess::default(),
            runner: RunnerArgs::default(),
            retention: agentpool_server::DEFAULT_RETENTION,
            agent_versions: false,
        }
    }
}

/// One in-process worker's task.
type WorkerHandle = JoinHandle<anyhow::Result<()>>;

/// A running embedded pool.
pub struct Embedded {
    pub url: String,
    /// The agents its workers offer: `command`, then those installed (or named and installed).
    pub agents: Vec<String>,
    server: RunningServer,
    /// Stops the workers: they stop claiming, finish (or, past the grace, cancel) their tasks
    /// and deregister.
    workers_stop: CancellationToken,
    /// Ends the workers' drain at once: running tasks are stopped and handed back.
    workers_stop_now: CancellationToken,
    workers: Vec<WorkerHandle>,
    /// Each worker's health, and why it is unhealthy.
    health: Vec<HealthReporter>,
    /// The database, closed once the server has stopped.
    store: Arc<dyn agentpool_store::Store>,
}

impl Embedded {
    pub async fn start(opts: EmbeddedOptions) -> anyhow::Result<Self> {
        // Nobody cancels this token, so the start is never given up.
        Self::start_until(opts, CancellationToken::new())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the embedded pool's start was stopped"))
    }

    /// [`Embedded::start`], given up when `stop` is canceled before the pool is up (a Ctrl-C
    /// or SIGTERM during start-up): what started is stopped, and `None` returned.
    pub async fn start_until(opts: EmbeddedOptions, stop: CancellationToken) -> anyhow::Result<Option<Self>> {
        std::fs::create_dir_all(&opts.data_dir)
            .with_context(|| format!("cannot create data dir {}", opts.data_dir.display()))?;
        crate::config::check_database_url(&opts.database_url)?;
        let store = tokio::select! {
            s = agentpool_store::open_store(&opts.database_url) => s
                .with_context(|| format!("cannot open database {}", redact_url(&opts.database_url)))?,
            _ = stop.cancelled() => return Ok(None),
        };
        writable(store.as_ref(), &opts.database_url).await?;
        let mut cfg = ServerConfig::new(opts.database_url.clone(), opts.listen);
        cfg.auth = AuthMode::NoAuthLoopback;
        cfg.allow_local_repos = true;
        cfg.retention = opts.retention;
        cfg.server_key = Some(load_or_create_key(&opts.data_dir)?);
        let server = agentpool_server::start_with_store(cfg, store.clone())
            .await
            .map_err(|e| Exit::new(ExitCode::Failed, e.to_string()))?;
        let url = format!("http://{}", server.addr);
        let workers_stop = CancellationToken::new();
        let workers_stop_now = CancellationToken::new();
        let (registered_tx, mut registered) = tokio::sync::mpsc::unbounded_channel();
        let offered = offered_agents(&opts.agents, opts.agent_bin_dir.as_deref())?;
        let mut agents = vec![agentpool_core::spec::COMMAND_AGENT.to_string()];
        agents.extend(offered.names());
        let (workers, health) = start_workers(
            &opts,
            offered,
            &url,
            &workers_stop,
            &workers_stop_now,
            registered_tx,
        )?;
        // Announce the pool only once every worker can take tasks, so that whoever reads the
        // URL and lists workers or submits at once sees the whole pool.
        let all_registered = async {
            for _ in 0..opts.workers {
                if registered.recv().await.is_none() {
                    return false;
                }
            }
            true
        };
        // A registration waits at most half a second for the agents' versions; the limit is for
        // a machine too busy to answer at all.
        let registered = tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(120), all_registered) => matches!(r, Ok(true)),
            _ = stop.cancelled() => {
                // Those registered may have claimed a task already: hand it back, not wait.
                workers_stop_now.cancel();
                workers_stop.cancel();
                for w in workers {
                    let _ = w.await;
                }
                let _ = server.shutdown().await;
                return Ok(None);
            }
        };
        if !registered {
            workers_stop.cancel();
            let _ = server.shutdown().await;
            return Err(Exit::new(
                ExitCode::Failed,
                "the embedded workers did not start (see the log above)",
            )
            .into());
        }
        Ok(Some(Self {
            url,
            agents,
            server,
            workers_stop,
            workers_stop_now,
            workers,
            health,
            store,
        }))
    }

    /// Resolves once every worker of the pool is unhealthy (git or its agents cannot be
    /// started, its key is refused), with their reasons: the pool claims nothing then, so a
    /// transient pool's task would wait for a recovery that may never come.
    pub async fn all_unhealthy(&self) -> Vec<String> {
        for h in &self.health {
            // The pool holds a sender of each, so the channel stays open.
            let _ = h.subscribe().wait_for(|s| *s == WorkerHealth::Unhealthy).await;
        }
        let mut why: Vec<String> = self.health.iter().filter_map(HealthReporter::why).collect();
        why.dedup();
        why
    }

    /// Resolves if the server stops on its own (an I/O error).
    pub async fn stopped(&self) {
        self.server.stop_token().cancelled().await;
    }

    /// Cancel to end [`Embedded::stop`]'s drain at once (a second Ctrl-C): running tasks are
    /// stopped and handed back to the queue instead of being waited for.
    pub fn stop_now_token(&self) -> CancellationToken {
        self.workers_stop_now.clone()
    }

    /// Drain the workers, then the server.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.workers_stop.cancel();
        for w in self.workers {
            match w.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "worker stopped with an error"),
                Err(e) => tracing::warn!(error = %e, "worker task panicked"),
            }
        }
        let stopped = self
            .server
            .shutdown()
            .await
            .map_err(|e| anyhow::anyhow!("server stopped with an error: {e}"));
        self.store.close().await;
        stopped
    }
}

/// Fail at once, in one line, when the database refuses writes (a read-only SQLite file, a
/// read-only replica): the workers' registrations would otherwise be retried, and refused,
/// until start-up gives up minutes later. The write is one that changes nothing: it marks
/// offline the workers silent for a century.
async fn writable(store: &dyn agentpool_store::Store, url: &str) -> anyhow::Result<()> {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    store.mark_workers_offline(CENTURY).await.map_err(|e| {
        Exit::new(
            ExitCode::Failed,
            format!("the database {} refuses writes: {e}", redact_url(url)),
        )
    })?;
    Ok(())
}

/// Worker `i`'s directory in the data dir: its workspaces and state, kept across restarts.
fn worker_dir(data_dir: &Path, i: u32) -> PathBuf {
    data_dir.join("work").join(format!("worker-{i}"))
}

/// Where the worker on `worker_dir` records the processes of its runs, which a worker
/// starting again on that directory kills if its previous life left them running.
pub fn running_records(worker_dir: &Path) -> PathBuf {
    agentpool_runner::PipelineConfig::new(worker_dir).running_records()
}

/// The key that encrypts stored credentials: `<data dir>/server.key`, created (mode 0600) on
/// first use so that credentials survive restarts of the embedded pool.
fn load_or_create_key(data_dir: &Path) -> anyhow::Result<ServerKey> {
    let path = data_dir.join("server.key");
    match std::fs::read_to_string(&path) {
        Ok(s) => ServerKey::parse(s.trim()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = ServerKey::generate();
            write_private(&path, key.to_base64().as_bytes())?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}

/// The agents a worker offers: [`agent_registry`], less those named whose CLI is not
/// installed here, with a warning for each. A worker only offers what it can run: tasks for
/// another agent wait for a worker that has it (their waiting reason says so) instead of
/// failing here, and such a task does not make the worker unhealthy for the agents it has.
pub fn offered_agents(only: &[String], bin_dir: Option<&Path>) -> anyhow::Result<Registry> {
    let named = agent_registry(only, bin_dir)?;
    if only.is_empty() {
        // Already only the installed ones.
        return Ok(named);
    }
    let mut r = Registry::new();
    for name in named.names() {
        match named.get(&name) {
            Some(a) if a.installed() => r.register(a),
            Some(a) => tracing::warn!(
                "agent {name} is not installed here (its CLI is not found, or not executable, in \
                 AGENTPOOL_AGENT_BIN_DIR or on PATH): this worker does not offer it{}",
                a.install_hint()
                    .map(|h| format!(" (install it: {h})"))
                    .unwrap_or_default()
            ),
            None => {}
        }
    }
    Ok(r)
}

/// How to install the CLI of built-in agent `name`, when one command does it.
pub fn install_hint(name: &str) -> Option<String> {
    Registry::builtin(&AgentConfig::from_env())
        .get(name)?
        .install_hint()
}

/// The agents a process may run: the shipped adapters whose CLI is installed, or exactly
/// those named, installed or not (`run-task`, whose `--check` must find one missing). Command
/// tasks are always run.
pub fn agent_registry(only: &[String], bin_dir: Option<&Path>) -> anyhow::Result<Registry> {
    let mut cfg = AgentConfig::from_env();
    if let Some(d) = bin_dir {
        cfg.bin_dir = Some(d.to_path_buf());
    }
    let all = Registry::builtin(&cfg);
    if only.is_empty() {
        let mut r = Registry::new();
        for name in all.names() {
            if let Some(a) = all.get(&name).filter(|a| a.installed()) {
                r.register(a);
            }
        }
        return Ok(r);
    }
    let mut r = Registry::new();
    // Command tasks need no adapter: the worker runs them itself.
    for name in only.iter().filter(|n| *n != agentpool_core::spec::COMMAND_AGENT) {
        let agent = all.get(name).ok_or_else(|| {
            Exit::new(
                ExitCode::Usage,
                format!("unknown agent {name:?} (known: {})", all.names().join(", ")),
            )
        })?;
        r.register(agent);
    }
    Ok(r)
}

/// Start `opts.workers` workers in this process. They speak the worker protocol to the
/// embedded server over loopback rather than to the store directly, so that they get what
/// HTTP workers get: credentials decrypted by the server, events pushed to live followers at
/// once, and the server's metrics.
fn start_workers(
    opts: &EmbeddedOptions,
    agents: Registry,
    url: &str,
    stop: &CancellationToken,
    stop_now: &CancellationToken,
    registered: tokio::sync::mpsc::UnboundedSender<WorkerId>,
) -> anyhow::Result<(Vec<WorkerHandle>, Vec<HealthReporter>)> {
    let api: Arc<dyn WorkerApi> =
        Arc::new(Client::new(url, None).map_err(|e| anyhow::anyhow!("embedded worker: {e}"))?);
    let mut handles = Vec::new();
    let mut health = Vec::new();
    for i in 0..opts.workers {
        let mut cfg = WorkerConfig::new(worker_dir(&opts.data_dir, i), opts.concurrency);
        cfg.agents = agents.clone();
        cfg.labels.extend(opts.labels.iter().cloned());
        cfg.pipeline.allow_file_repos = true;
        cfg.pipeline.extra_env.extend(opts.extra_env.clone());
        cfg.pipeline.secret_env.extend(opts.access.env.clone());
        cfg.pipeline.local_logins.extend(opts.access.local_logins.clone());
        opts.runner.apply(&mut cfg.pipeline);
        // A short long-poll bounds how long a stop waits for a pending claim.
        cfg.claim_wait = Duration::from_secs(5);
        // Cancel requests reach a worker with its heartbeat; on loopback a heartbeat is cheap,
        // so beat often and cancel promptly.
        cfg.heartbeat_interval = Duration::from_secs(1);
        if !opts.agent_versions {
            cfg.version_wait = None;
        }
        cfg.on_registered = Some(registered.clone());
        cfg.stop_now = stop_now.clone();
        let (reporter, _) = HealthReporter::new();
        health.push(reporter.clone());
        cfg.health = Some(reporter);
        let api = api.clone();
        let stop = stop.clone();
        handles.push(tokio::spawn(async move {
            run_worker(cfg, api, stop)
                .await
                .map(|_| ())
                .map_err(|e| anyhow::anyhow!("{e}"))
        }));
    }
    Ok((handles, health))
}
