//! `agentpool agents`: which agent CLIs this machine can run, found where a worker looks for
//! them (AGENTPOOL_AGENT_BIN_DIR, then PATH), with their versions and whether the local login
//! `--use-local-login` would borrow is there. What `up` and `worker` offer by default.

use std::path::PathBuf;

use agentpool_agents::{AgentConfig, Registry};
use serde::Serialize;

use super::print_json;
use crate::config::Settings;
use crate::exit::ExitCode;
use crate::output::{self, Style};

/// One agent as this machine has it.
#[derive(Debug, Serialize)]
struct Found {
    name: String,
    installed: bool,
    /// Where its CLI is (or, for an override, where it was said to be).
    program: Option<PathBuf>,
    version: Option<String>,
    /// How to install it, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    install: Option<String>,
    local_login: Login,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "file")]
enum Login {
    /// agentpool cannot use this agent's local login.
    Unsupported,
    /// Supported, and not found: the first of the files it looks for.
    Missing(PathBuf),
    Found(PathBuf),
}

pub async fn agents(settings: &Settings) -> anyhow::Result<ExitCode> {
    let cfg = AgentConfig::from_env();
    let all = Registry::builtin(&cfg);
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from);
    // Each version is a CLI started (a Node.js start for most): ask them all at once.
    let found = futures::future::join_all(all.names().into_iter().filter_map(|name| {
        let agent = all.get(&name)?;
        let home = home.clone();
        Some(async move {
            let installed = agent.installed();
            let version = if installed { agent.version().await } else { None };
            let files = agentpool_agents::login::files_of(&name);
            let local_login = match (files.first(), &home) {
                (None, _) => Login::Unsupported,
                (Some(first), None) => Login::Missing(PathBuf::from("~").join(first)),
                (Some(first), Some(h)) => files
                    .iter()
                    .map(|f| h.join(f))
                    .find(|p| p.is_file())
                    .map_or_else(|| Login::Missing(h.join(first)), Login::Found),
            };
            Found {
                name,
                installed,
                program: agent.program(),
                version,
                install: (!installed).then(|| agent.install_hint()).flatten(),
                local_login,
            }
        })
    }))
    .await;
    if settings.json() {
        print_json(&found)?;
        return Ok(ExitCode::Success);
    }
    let s = Style::stdout();
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|a| {
            let cli = match (&a.program, a.installed) {
                (Some(p), true) => p.display().to_string(),
                (Some(p), false) => format!("not executable: {}", p.display()),
                (None, _) => s.dim(&match &a.install {
                    Some(h) => format!("not installed ({h})"),
                    None => "not installed".into(),
                }),
            };
            let login = match &a.local_login {
                Login::Unsupported => s.dim("-"),
                Login::Missing(_) => s.dim("none"),
                Login::Found(p) => tilde(p, home.as_deref()),
            };
            vec![
                a.name.clone(),
                cli,
                a.version.clone().unwrap_or_else(|| "-".into()),
                login,
            ]
        })
        .collect();
    out!(
        "{}",
        output::table(&s, &["AGENT", "CLI", "VERSION", "LOCAL LOGIN"], &rows)
    );
    let where_ = match &cfg.bin_dir {
        Some(d) => format!(
            "looked up in {} (AGENTPOOL_AGENT_BIN_DIR), then on PATH",
            d.display()
        ),
        None => "looked up on PATH (set AGENTPOOL_AGENT_BIN_DIR to look in a directory first)".into(),
    };
    eprintln!(
        "{}",
        Style::stderr().dim(&format!("{where_}; command tasks need only sh"))
    );
    Ok(ExitCode::Success)
}

/// `p` with the home directory written `~`.
fn tilde(p: &std::path::Path, home: Option<&std::path::Path>) -> String {
    match home.and_then(|h| p.strip_prefix(h).ok()) {
        Some(rest) => format!("~/{}", rest.display()),
        None => p.display().to_string(),
    }
}
