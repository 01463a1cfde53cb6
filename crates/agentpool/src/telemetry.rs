//! Logging: `tracing` to stderr, filtered by `AGENTPOOL_LOG` (or `RUST_LOG`), as text for a
//! terminal or as one JSON object a line for a log collector (`--log-format json`). Client
//! commands default to warnings only so their output stays clean; long-running services log at
//! info.

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Install the logger. An `AGENTPOOL_LOG` that is not a filter is an error (the operator set
/// it for this program, and silently logging something else hides what they asked for);
/// `RUST_LOG` is shared with other programs and falls back to the default instead.
pub fn init(service: bool, format: LogFormat) -> Result<(), String> {
    let default = if service {
        "info,sqlx=warn,hyper=warn,tower_http=warn"
    } else {
        "warn"
    };
    // Set but empty, as `AGENTPOOL_LOG=` in a manifest leaves it, is unset.
    let filter = match std::env::var("AGENTPOOL_LOG").ok().filter(|f| !f.is_empty()) {
        Some(f) => {
            EnvFilter::try_new(&f).map_err(|e| format!("AGENTPOOL_LOG={f:?} is not a log filter: {e}"))?
        }
        None => std::env::var("RUST_LOG")
            .ok()
            .and_then(|f| EnvFilter::try_new(f).ok())
            .unwrap_or_else(|| EnvFilter::new(default)),
    };
    let logger = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => logger.with_ansi(crate::output::Style::stderr().color).try_init(),
        // Fields at the top level beside `timestamp`, `level` and `message`, where collectors
        // (Loki, Elasticsearch, Cloud Logging) index them.
        LogFormat::Json => logger
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    Ok(())
}
