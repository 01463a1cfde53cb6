//! Configuration resolution: flags and `AGENTPOOL_*` variables (handled by clap) win over the
//! config file `<data dir>/config.json` (its keys are the flags' defaults, see
//! [`crate::file_settings`]), which wins over built-in defaults. Also the state file
//! through which `agentpool up` tells later commands where its server listens.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::cli::{GlobalArgs, OutputFormat};

/// The settings of the optional config file that commands read beyond their own flags (the
/// server, token, output, database and CA of every command). Every key of the file also becomes
/// the default of its flag ([`crate::file_settings`]), which refuses unknown keys before this
/// is read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileConfig {
    pub server: Option<String>,
    pub token: Option<String>,
    pub output: Option<OutputFormat>,
    pub database_url: Option<String>,
    /// PEM file of an extra CA to trust for an https:// server.
    pub ca_cert: Option<PathBuf>,
}

pub const CONFIG_FILE: &str = "config.json";
const UP_STATE_FILE: &str = "up.json";

/// The settings every command works with, after precedence was applied.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    /// An explicitly configured server (flag, env or config file), if any.
    pub server: Option<String>,
    pub token: Option<String>,
    pub output: OutputFormat,
    pub database_url: Option<String>,
    /// PEM of the extra CA (`--ca-cert`) to trust for an https:// server.
    pub ca_pem: Option<Vec<u8>>,
}

impl Settings {
    pub fn resolve(global: &GlobalArgs) -> anyhow::Result<Self> {
        // Absolute from here on: workers run git and agents with other working directories,
        // where a relative data dir would name a different (missing) place.
        let data_dir = absolute(global.data_dir.clone().unwrap_or_else(default_data_dir))?;
        let file = load_file(&data_dir)?;
        let ca_pem = match global.ca_cert.clone().or(file.ca_cert) {
            Some(path) => Some(std::fs::read(&path).map_err(|e| {
                crate::exit::Exit::new(
                    crate::exit::ExitCode::Usage,
                    format!("cannot read the CA certificate {}: {e}", path.display()),
                )
            })?),
            None => None,
        };
        Ok(Self {
            ca_pem,
            server: global.server.clone().or(file.server).filter(|s| !s.is_empty()),
            token: global.token.clone().or(file.token).filter(|s| !s.is_empty()),
            output: global.output.or(file.output).unwrap_or(OutputFormat::Human),
            database_url: std::env::var("AGENTPOOL_DATABASE_URL")
                .ok()
                .filter(|s| !s.is_empty())
                .or(file.database_url),
            data_dir,
        })
    }

    /// A client for `url` with this configuration's token and extra CA.
    pub fn client(&self, url: &str) -> Result<agentpool_client::Client, agentpool_client::Error> {
        let mut cfg = agentpool_client::ClientConfig::new(url).token(self.token.clone());
        cfg.ca_pem = self.ca_pem.clone();
        agentpool_client::Client::with_config(cfg)
    }

    pub fn json(&self) -> bool {
        self.output == OutputFormat::Json
    }

    /// The database of the embedded pool: `<data dir>/agentpool.db`, unless configured.
    pub fn database_url(&self, flag: Option<&str>) -> String {
        flag.map(str::to_string)
            .or_else(|| self.database_url.clone())
            .unwrap_or_else(|| sqlite_url(&self.data_dir.join("agentpool.db")))
    }
}

/// `path` relative to the current directory made absolute (without resolving symlinks, and
/// without requiring that it exists yet).
pub fn absolute(path: PathBuf) -> anyhow::Result<PathBuf> {
    std::path::absolute(&path).with_context(|| format!("cannot resolve {}", path.display()))
}

/// Refuse a database URL of a kind agentpool cannot open before anything starts: a usage
/// mistake (exit 2), not a database that could not be reached. The URL is not repeated: it
/// may carry a password.
pub fn check_database_url(url: &str) -> Result<(), crate::exit::Exit> {
    if agentpool_store::is_database_url(url) {
        Ok(())
    } else {
        Err(crate::exit::Exit::new(
            crate::exit::ExitCode::Usage,
            "--database-url (AGENTPOOL_DATABASE_URL): a database URL starts with sqlite: or postgres://",
        ))
    }
}

pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// `./.agentpool` when it exists (a project-local pool), else the user's data directory
/// (`$XDG_DATA_HOME/agentpool` or `~/.local/share/agentpool`), else `./.agentpool`.
pub fn default_data_dir() -> PathBuf {
    let local = PathBuf::from(".agentpool");
    if local.is_dir() {
        return local;
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("agentpool");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".local/share/agentpool");
    }
    local
}

fn load_file(data_dir: &Path) -> anyhow::Result<FileConfig> {
    let path = data_dir.join(CONFIG_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("config file {} is not valid", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// What `agentpool up` records so that `run`, `submit`, `tasks …` find its server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpState {
    pub url: String,
    pub pid: u32,
}

pub fn read_up_state(data_dir: &Path) -> Option<UpState> {
    let text = std::fs::read_to_string(data_dir.join(UP_STATE_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

pub fn write_up_state(data_dir: &Path, state: &UpState) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let path = data_dir.join(UP_STATE_FILE);
    std::fs::write(&path, serde_json::to_vec_pretty(state)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Remove the state file, but only if it is still ours (another `up` may have replaced it).
pub fn clear_up_state(data_dir: &Path, pid: u32) {
    if read_up_state(data_dir).is_some_and(|s| s.pid == pid) {
        let _ = std::fs::remove_file(data_dir.join(UP_STATE_FILE));
    }
}

/// A database URL safe to print: a password replaced by `***`, whether it is in the user info
/// (`postgres://ap:s3cret@db/agentpool`) or a query parameter (`?password=s3cret`, which
/// libpq and sqlx also read). A URL that carries no password is printed as it is, so the
/// line does not suggest one was given.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let mut out = format!("{scheme}://");
    // The userinfo ends at the last `@`, wherever it is: a password typed with a raw `/` or
    // `?` would otherwise be read as a path or query and printed. (A query holding an `@`
    // then loses more than it needs to, which is the safe side.)
    let rest = match rest.rsplit_once('@') {
        Some((userinfo, after)) => {
            match userinfo.split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:***@")),
                None if userinfo.contains(['/', '?']) => out.push_str("***@"),
                None => out.push_str(&format!("{userinfo}@")),
            }
            after
        }
        None => rest,
    };
    let (before_query, query) = rest.split_once('?').map_or((rest, None), |(a, q)| (a, Some(q)));
    let (authority, path) = before_query
        .split_once('/')
        .map_or((before_query, None), |(a, p)| (a, Some(p)));
    out.push_str(authority);
    if let Some(path) = path {
        out.push('/');
        out.push_str(path);
    }
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _))
                    if k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("sslpassword") =>
                {
                    format!("{k}=***")
                }
                _ => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_passwords_are_not_printed() {
        assert_eq!(
            redact_url("postgres://ap:s3cret@db:5432/agentpool"),
            "postgres://ap:***@db:5432/agentpool"
        );
        assert_eq!(redact_url("sqlite:///tmp/a.db"), "sqlite:///tmp/a.db");
        assert_eq!(
            redact_url("postgres://db/agentpool?user=ap&password=s3cret&sslmode=require"),
            "postgres://db/agentpool?user=ap&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://ap:p@ss@db/agentpool?sslpassword=k3y"),
            "postgres://ap:***@db/agentpool?sslpassword=***"
        );
        // A password typed with a raw `/` or `?`.
        assert_eq!(
            redact_url("postgres://ap:Pg/Pass?Xq7@db:5432/agentpool"),
            "postgres://ap:***@db:5432/agentpool"
        );
        // No password given: nothing to hide, and no `***` suggesting there was one.
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:54329/walk"),
            "postgres://postgres@127.0.0.1:54329/walk"
        );
        assert_eq!(
            redact_url("sqlite:///tmp/a.db?mode=rwc"),
            "sqlite:///tmp/a.db?mode=rwc"
        );
    }

    fn global(dir: &Path) -> GlobalArgs {
        GlobalArgs {
            data_dir: Some(dir.to_path_buf()),
            server: None,
            token: None,
            output: None,
            ca_cert: None,
            log_format: crate::cli::LogFormat::Text,
        }
    }

    #[test]
    fn flags_win_over_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            r#"{"server":"http://file:1","token":"from-file","output":"json"}"#,
        )
        .unwrap();
        let mut g = global(dir.path());
        let s = Settings::resolve(&g).unwrap();
        assert_eq!(s.server.as_deref(), Some("http://file:1"));
        assert_eq!(s.token.as_deref(), Some("from-file"));
        assert!(s.json());
        g.server = Some("http://flag:2".into());
        g.output = Some(OutputFormat::Human);
        let s = Settings::resolve(&g).unwrap();
        assert_eq!(s.server.as_deref(), Some("http://flag:2"));
        assert!(!s.json());
    }

    #[test]
    fn up_state_is_only_cleared_by_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let st = UpState {
            url: "http://127.0.0.1:1".into(),
            pid: 42,
        };
        write_up_state(dir.path(), &st).unwrap();
        clear_up_state(dir.path(), 7);
        assert_eq!(read_up_state(dir.path()), Some(st));
        clear_up_state(dir.path(), 42);
        assert_eq!(read_up_state(dir.path()), None);
    }
}
