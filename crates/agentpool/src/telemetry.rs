//! Logging: `tracing` to stderr, filtered by `AGENTPOOL_LOG` (or `RUST_LOG`). Client commands
//! default to warnings only so their output stays clean; long-running services log at info.

use tracing_subscriber::EnvFilter;

pub fn init(service: bool) {
    let default = if service {
        "info,sqlx=warn,hyper=warn,tower_http=warn"
    } else {
        "warn"
    };
    let filter = std::env::var("AGENTPOOL_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(crate::output::Style::stderr().color)
        .try_init();
}
