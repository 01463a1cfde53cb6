//! `up`, `serve` and `migrate`: the long-running server processes, and the operator's work on
//! the database itself.

use std::net::SocketAddr;
use std::time::Duration;

use agentpool_server::{AuthMode, Role, ServerConfig, ServerKey};
use agentpool_store::SchemaChange;
use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::print_json;
use crate::access::AgentAccess;
use crate::cli::{MigrateArgs, ServeArgs, UpArgs};
use crate::config::{self, Settings, redact_url};
use crate::data_dir_lock;
use crate::embedded::{Embedded, EmbeddedOptions};
use crate::exit::{Exit, ExitCode};
use crate::output::Style;

/// A token that is canceled on SIGINT or SIGTERM, and the watcher to abort once the work it
/// stops has ended.
pub fn stop_on_signal() -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let watcher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            stop.cancel();
        })
    };
    (stop, watcher)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    Signals::new().next().await;
}

/// SIGINT (Ctrl-C) and SIGTERM, listened for from the moment this is made. A signal that comes
/// while nobody awaits [`Signals::next`] is kept for the next call: a second Ctrl-C pressed
/// quickly after the first is not lost while the first one is being handled (a listener made
/// anew after handling the first would miss it, and the second Ctrl-C would do nothing).
pub struct Signals {
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Default for Signals {
    fn default() -> Self {
        Self::new()
    }
}

impl Signals {
    pub fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                int: signal(SignalKind::interrupt()).ok(),
                term: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// The next signal (or one that came since the last call).
    pub async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn recv(s: Option<&mut tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = recv(self.int.as_mut()) => {}
                _ = recv(self.term.as_mut()) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

pub async fn up(settings: &Settings, args: UpArgs) -> anyhow::Result<ExitCode> {
    if !args.listen.ip().is_loopback() {
        return Err(Exit::new(
            ExitCode::Usage,
            format!(
                "the embedded pool runs without auth and only listens on loopback, not {} (use `agentpool serve` for a network server)",
                args.listen
            ),
        )
        .into());
    }
    // Taken before anything starts (`up.json` is written only once the pool is up, too late
    // to keep a second `up` started at the same moment from running too), held until exit.
    let lock = data_dir_lock::for_up(&settings.data_dir)?;
    if let Some(existing) = config::read_up_state(&settings.data_dir) {
        let c = agentpool_client::Client::new(&existing.url, None)?;
        if c.ready().await.is_ok() {
            return Err(Exit::new(
                ExitCode::Failed,
                format!(
                    "an embedded pool already runs for {} at {} (pid {})",
                    settings.data_dir.display(),
                    existing.url,
                    existing.pid
                ),
            )
            .into());
        }
    }
    let opts = EmbeddedOptions {
        data_dir: settings.data_dir.clone(),
        database_url: settings.database_url(args.database_url.as_deref()),
        listen: args.listen,
        workers: args.workers,
        concurrency: args.concurrency.max(1),
        agents: args.agents,
        labels: args.labels,
        extra_env: Default::default(),
        agent_bin_dir: None,
        access: AgentAccess::resolve(&args.access)?,
        runner: args.runner,
        retention: args.retention.retention(),
        agent_versions: true,
    };
    // What the workers of a pool that died left running in directories this one's workers
    // do not use (fewer --workers than before) would otherwise run on, unowned.
    lock.kill_leftovers_of_other_workers(args.workers);
    // Listening from here on: Ctrl-C or SIGTERM during start-up stops what started and exits,
    // and a quick second one is not lost (see `Signals`).
    let mut signals = Signals::new();
    let stop_start = CancellationToken::new();
    let start = Embedded::start_until(opts, stop_start.clone());
    tokio::pin!(start);
    let mut interrupted = false;
    let started = tokio::select! {
        r = &mut start => r?,
        _ = signals.next() => {
            interrupted = true;
            stop_start.cancel();
            start.await?
        }
    };
    let pool = match started {
        Some(pool) if interrupted => {
            // Up just as the signal came: stop it as if it had come a moment later.
            return pool.stop().await.map(|()| ExitCode::Success);
        }
        Some(pool) => pool,
        None => {
            eprintln!("{}", Style::stderr().dim("stopped before the pool was up"));
            return Ok(ExitCode::Success);
        }
    };
    let pid = std::process::id();
    config::write_up_state(
        &settings.data_dir,
        &config::UpState {
            url: pool.url.clone(),
            pid,
        },
    )?;
    let s = Style::stdout();
    if settings.json() {
        outln!(
            "{}",
            serde_json::json!({ "url": pool.url, "dashboard": format!("{}/", pool.url), "pid": pid, "data_dir": settings.data_dir, "workers": args.workers, "agents": pool.agents })
        );
    } else {
        outln!("agentpool is up at {}", s.bold(&pool.url));
        outln!("dashboard: {}/", pool.url);
        outln!(
            "{}",
            s.dim(&format!(
                "{} offering {}; data in {}; stop with Ctrl-C",
                agentpool_core::render::count(args.workers, "worker", "workers"),
                pool.agents.join(", "),
                settings.data_dir.display()
            ))
        );
    }
    tokio::select! {
        _ = signals.next() => {}
        _ = pool.stopped() => {}
    }
    eprintln!(
        "{}",
        Style::stderr().dim(
            "draining: finishing running tasks… (Ctrl-C again to stop them now; they go back to the queue)"
        )
    );
    let now = pool.stop_now_token();
    let second = tokio::spawn(async move {
        signals.next().await;
        eprintln!("{}", Style::stderr().dim("stopping running tasks now"));
        now.cancel();
    });
    let r = pool.stop().await;
    second.abort();
    config::clear_up_state(&settings.data_dir, pid);
    // Released only once the state file is gone, so a next `up` never sees ours.
    drop(lock);
    r.map(|()| ExitCode::Success)
}

/// The server's configuration from `serve`'s flags; a flag that cannot be honoured is a usage
/// error, told before the database is opened.
fn server_config(database_url: String, args: &ServeArgs) -> Result<ServerConfig, Exit> {
    let mut cfg = ServerConfig::new(database_url, args.listen);
    cfg.allow_local_repos = args.allow_local_repos;
    cfg.lease_ttl = Duration::from_secs(args.lease_ttl_secs);
    // A worker silent for a lease TTL has lost its leases: it is not shown busy past that.
    cfg.heartbeat_threshold = cfg.lease_ttl;
    cfg.maintenance_interval = Some(Duration::from_secs(args.maintenance_secs));
    cfg.max_events_per_attempt = args.max_events_per_attempt;
    cfg.retention = args.retention.retention();
    cfg.max_timeout_secs = args.max_timeout_secs;
    if args.no_auth {
        if !args.listen.ip().is_loopback() {
            return Err(Exit::new(
                ExitCode::Usage,
                format!(
                    "--no-auth is only allowed on a loopback address, not {}",
                    args.listen
                ),
            ));
        }
        cfg.auth = AuthMode::NoAuthLoopback;
    }
    cfg.public_url = args.public_url.clone();
    if let (Some(cert), Some(key)) = (args.tls_cert.clone(), args.tls_key.clone()) {
        let files = agentpool_server::tls::TlsFiles { cert, key };
        // Checked here so that a bad file is a usage error, before the database is opened.
        agentpool_server::tls::load(&files).map_err(|e| Exit::new(ExitCode::Usage, e.to_string()))?;
        cfg.tls = Some(files);
    }
    if let Some(k) = &args.server_key {
        cfg.server_key =
            Some(ServerKey::parse(k).map_err(|e| Exit::new(ExitCode::Usage, format!("--server-key: {e}")))?);
    } else {
        tracing::warn!("no AGENTPOOL_SERVER_KEY: storing credentials is disabled");
    }
    Ok(cfg)
}

pub async fn serve(settings: &Settings, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let database_url = settings.database_url(args.database_url.as_deref());
    crate::config::check_database_url(&database_url)?;
    let cfg = server_config(database_url.clone(), &args)?;
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    std::fs::create_dir_all(&settings.data_dir).ok();
    if args.bootstrap_token {
        let store = agentpool_store::open_store(&database_url)
            .await
            .with_context(|| format!("cannot open {}", redact_url(&database_url)))?;
        if store.list_tokens().await?.is_empty() {
            let t = agentpool_server::create_token(store.as_ref(), Role::Admin, "bootstrap").await?;
            // Printed once, on stdout, so an operator can capture it; never logged.
            outln!("admin token: {}", t.plaintext);
        }
        store.close().await;
    }
    let json = settings.json();
    agentpool_server::serve(
        cfg,
        move |addr: SocketAddr| {
            if json {
                outln!("{}", serde_json::json!({ "url": format!("{scheme}://{addr}") }));
            } else {
                outln!("agentpool server listening on {scheme}://{addr}");
            }
        },
        shutdown_signal(),
    )
    .await
    .map_err(|e| Exit::new(ExitCode::Connection, e.to_string()))?;
    Ok(ExitCode::Success)
}

pub async fn migrate(settings: &Settings, args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let url = settings.database_url(args.database_url.as_deref());
    crate::config::check_database_url(&url)?;
    if url.starts_with("sqlite:") {
        std::fs::create_dir_all(&settings.data_dir).ok();
    }
    let done = agentpool_store::migrate(&url)
        .await
        .with_context(|| format!("cannot migrate {}", redact_url(&url)))?;
    let shown = redact_url(&url);
    if settings.json() {
        let applied: &[(i64, String)] = match &done.change {
            SchemaChange::Created { .. } => &[],
            SchemaChange::Migrated(applied) => applied,
        };
        print_json(&serde_json::json!({
            "migrated": shown,
            "version": done.version,
            "created": matches!(done.change, SchemaChange::Created { .. }),
            "applied": applied
                .iter()
                .map(|(version, description)| serde_json::json!({"version": version, "description": description}))
                .collect::<Vec<_>>(),
        }))?;
    } else {
        outln!("{}", migrated_line(&shown, &done));
    }
    Ok(ExitCode::Success)
}

/// What `migrate` did, in one line: a new database's schema made, the migrations applied to
/// an older one, or nothing to do.
fn migrated_line(db: &str, done: &agentpool_store::Migrated) -> String {
    let version = done.version;
    match &done.change {
        SchemaChange::Created { migrations, .. } => format!(
            "database {db}: schema created at version {version} ({})",
            agentpool_core::render::count(*migrations, "migration", "migrations")
        ),
        SchemaChange::Migrated(applied) if applied.is_empty() => {
            format!("database {db} is up to date (schema version {version})")
        }
        SchemaChange::Migrated(applied) => {
            let names: Vec<String> = applied.iter().map(|(v, d)| format!("{v} {d}")).collect();
            format!(
                "database {db} migrated to schema version {version}: applied {}",
                names.join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use agentpool_store::{Migrated, SchemaChange};

    use super::{Signals, migrated_line, server_config};
    use crate::cli::{Cli, Command};

    /// `migrate` says what it did: a schema made, migrations applied, or nothing to do.
    #[test]
    fn migrate_says_what_it_did() {
        let line = |change, version| migrated_line("sqlite:db", &Migrated { change, version });
        assert_eq!(
            line(
                SchemaChange::Created {
                    version: 9,
                    migrations: 9
                },
                9
            ),
            "database sqlite:db: schema created at version 9 (9 migrations)"
        );
        assert_eq!(
            line(SchemaChange::Migrated(Vec::new()), 9),
            "database sqlite:db is up to date (schema version 9)"
        );
        let applied = vec![(8, "checks".to_string()), (9, "notifications".to_string())];
        assert_eq!(
            line(SchemaChange::Migrated(applied), 9),
            "database sqlite:db migrated to schema version 9: applied 8 checks, 9 notifications"
        );
    }

    #[test]
    fn serve_s_flags_set_retention_and_the_longest_timeout() {
        let serve = |argv: &[&str]| {
            let cli = Cli::try_parse_from([&["agentpool", "serve"], argv].concat())?;
            let Command::Serve(args) = cli.command else {
                panic!("not serve")
            };
            Ok::<_, clap::Error>(server_config("sqlite::memory:".into(), &args).expect("config"))
        };
        let default = serve(&[]).unwrap();
        assert_eq!(default.retention, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(default.max_timeout_secs, 24 * 3600);
        let set = serve(&["--retention-days", "30", "--max-timeout-secs", "3600"]).unwrap();
        assert_eq!(set.retention, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(set.max_timeout_secs, 3600);
        // Below the default task timeout, above what agents accept, or no retention at all.
        for bad in [
            ["--max-timeout-secs", "600"],
            ["--max-timeout-secs", "90000"],
            ["--retention-days", "0"],
        ] {
            assert!(serve(&bad).is_err(), "{bad:?}");
        }
    }

    /// Signals sent while nobody waits (between a first Ctrl-C's handling and the wait for a
    /// second) are each seen by the next wait.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_signal_sent_between_waits_is_kept_for_the_next() {
        let mut signals = Signals::new();
        for round in 0..2 {
            let sent = std::process::Command::new("kill")
                .args(["-TERM", &std::process::id().to_string()])
                .status()
                .expect("kill");
            assert!(sent.success());
            tokio::time::timeout(Duration::from_secs(10), signals.next())
                .await
                .unwrap_or_else(|_| panic!("signal {round} was lost"));
        }
    }
}
