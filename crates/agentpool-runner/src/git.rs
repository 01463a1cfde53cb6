//! Running git safely: no user or system configuration, no terminal prompts, no `ext::`
//! transport, hooks and fsmonitor disabled, `--` before user values, and credentials handed
//! over through an askpass program that reads the token from a 0600 file — never through a
//! URL, an argument, the environment of the agent, a log line or an event.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentpool_core::Redactor;
use tokio_util::sync::CancellationToken;

use crate::process::{GroupRecord, KillReason, ProcessSpec, run_captured};

mod summary;

/// A secret string: never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself; call only where it is handed to its consumer.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// HTTP credentials for git: a user name and a token used as the password.
#[derive(Debug, Clone)]
pub struct GitCredentials {
    pub username: String,
    pub token: Secret,
}

/// The askpass program and the token file it reads, in a private (0700) directory.
#[derive(Debug, Clone)]
pub struct AskPass {
    script: PathBuf,
    token_file: PathBuf,
    username: String,
}

const ASKPASS_SCRIPT: &str = r#"#!/bin/sh
# agentpool askpass: git asks for the user name, then the password (the token).
case "$1" in
  Username*) printf '%s\n' "$AGENTPOOL_GIT_USERNAME" ;;
  *) cat -- "$AGENTPOOL_GIT_TOKEN_FILE" ;;
esac
"#;

impl AskPass {
    /// Write the askpass script and the token file into `dir` (created 0700).
    pub fn install(dir: &Path, creds: &GitCredentials) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let script = dir.join("askpass.sh");
        write_private(&script, ASKPASS_SCRIPT.as_bytes(), 0o700)?;
        let me = Self {
            script,
            token_file: dir.join("git-token"),
            username: creds.username.clone(),
        };
        me.write_token(&creds.token)?;
        Ok(me)
    }

    /// (Re)write the token file, before git needs it.
    pub fn write_token(&self, token: &Secret) -> io::Result<()> {
        let mut data = token.expose().as_bytes().to_vec();
        data.push(b'\n');
        write_private(&self.token_file, &data, 0o600)
    }

    /// Delete the token file while no git command needs it (during the task's own run).
    pub fn remove_token(&self) -> io::Result<()> {
        match std::fs::remove_file(&self.token_file) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn write_private(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// What went wrong running git.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The remote refused our credentials (or wanted some and we had none).
    #[error("git {step}: authentication failed: {message}")]
    Auth { step: &'static str, message: String },
    /// There is no repository at the URL (or none this remote admits to).
    #[error("git {step}: the repository was not found: {message}")]
    NotFound { step: &'static str, message: String },
    #[error("git {step} failed: {message}")]
    Failed { step: &'static str, message: String },
    #[error("git {step} was canceled")]
    Canceled { step: &'static str },
    #[error("git {step} timed out")]
    Timeout { step: &'static str },
    #[error("could not run git: {0}")]
    Io(#[from] io::Error),
}

/// Runs git commands with a fixed, safe environment.
#[derive(Debug, Clone)]
pub struct Git {
    program: PathBuf,
    env: Vec<(OsString, OsString)>,
    allow_file: bool,
    timeout: Duration,
    redactor: Redactor,
    /// `-c` settings that depend on the options (credentials).
    config: Vec<String>,
    /// Where its process groups are recorded while they run (crash clean-up).
    record: Option<GroupRecord>,
    /// Paths shown under another name in failure messages (see [`Git::hiding_path`]), the
    /// longest first.
    hidden_paths: Vec<(String, String)>,
}

/// How to configure [`Git`].
#[derive(Debug, Clone)]
pub struct GitOptions {
    /// HOME for git: an empty private directory, so no user configuration is read.
    pub home: PathBuf,
    pub askpass: Option<AskPass>,
    /// Allow `file://` and local-path remotes.
    pub allow_file: bool,
    /// Limit for each git command (clone of a large repository included).
    pub timeout: Duration,
    pub redactor: Redactor,
}

impl Git {
    pub fn new(opts: GitOptions) -> Self {
        let mut env: Vec<(OsString, OsString)> = vec![
            (
                "PATH".into(),
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            ),
            ("HOME".into(), opts.home.into_os_string()),
            // Messages in English: failures are classified from git's stderr.
            ("LANG".into(), "C".into()),
            ("LC_ALL".into(), "C".into()),
            ("GIT_TERMINAL_PROMPT".into(), "0".into()),
            ("GIT_CONFIG_GLOBAL".into(), "/dev/null".into()),
            ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
            ("GIT_ASKPASS".into(), "/bin/false".into()),
            ("SSH_ASKPASS".into(), "/bin/false".into()),
        ];
        if let Some(sock) = std::env::var_os("SSH_AUTH_SOCK") {
            env.push(("SSH_AUTH_SOCK".into(), sock));
        }
        let mut config = Vec::new();
        if let Some(a) = opts.askpass {
            // Send the token with the first request instead of after a 401 (one HTTP round trip
            // less per command; ignored by git before 2.46), and ask askpass only for it: the
            // user name is not a secret.
            config.push("http.proactiveAuth=basic".to_string());
            config.push(format!("credential.username={}", a.username));
            env.retain(|(k, _)| k != "GIT_ASKPASS");
            env.push(("GIT_ASKPASS".into(), a.script.into_os_string()));
            env.push(("AGENTPOOL_GIT_TOKEN_FILE".into(), a.token_file.into_os_string()));
            env.push(("AGENTPOOL_GIT_USERNAME".into(), a.username.into()));
        }
        Self {
            program: PathBuf::from("git"),
            env,
            allow_file: opts.allow_file,
            timeout: opts.timeout,
            redactor: opts.redactor,
            config,
            record: None,
            hidden_paths: Vec::new(),
        }
    }

    /// The same git, each command limited to `timeout` instead.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The limit of each git command.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Show `path` (and what lies under it) as `alias` in failure messages. A task's private
    /// directory is unlisted and has a random name so that other tasks cannot find it; a
    /// message that quotes git's `fatal: Unable to create '/…/repo/.git/index.lock'` would
    /// hand the name to whoever reads the task. Replaced before the message is cut to size,
    /// so no part of the path is left either.
    pub fn hiding_path(mut self, path: &Path, alias: &str) -> Self {
        let mut forms = vec![path.display().to_string()];
        // Git may print the path resolved (a symlinked work directory).
        if let Ok(real) = std::fs::canonicalize(path) {
            forms.push(real.display().to_string());
        }
        for form in forms {
            let form = form.trim_end_matches('/').to_string();
            if !form.is_empty() && !self.hidden_paths.iter().any(|(p, _)| *p == form) {
                self.hidden_paths.push((form, alias.to_string()));
            }
        }
        self.hidden_paths.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        self
    }

    /// `text` with the hidden paths under their aliases.
    fn hide_paths(&self, text: &str) -> String {
        self.hidden_paths
            .iter()
            .fold(text.to_string(), |t, (path, alias)| {
                t.replace(path.as_str(), alias)
            })
    }

    /// Record each git process group while it runs (see [`GroupRecord`]).
    pub fn recording(mut self, record: GroupRecord) -> Self {
        self.record = Some(record);
        self
    }

    /// Run this git executable instead of `git` from `PATH`.
    pub fn with_program(mut self, program: PathBuf) -> Self {
        self.program = program;
        self
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    fn base_args(&self, allow_file: bool) -> Vec<OsString> {
        let file = if allow_file || self.allow_file {
            "always"
        } else {
            "never"
        };
        [
            "-c",
            "protocol.ext.allow=never",
            "-c",
            &format!("protocol.file.allow={file}"),
            // Nothing from the workspace runs with the worker's credentials in reach.
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "credential.helper=",
            "-c",
            "gc.auto=0",
            // No background `git maintenance` process after each fetch.
            "-c",
            "maintenance.auto=false",
            "-c",
            "advice.detachedHead=false",
            "-c",
            "init.defaultBranch=main",
        ]
        .iter()
        .map(OsString::from)
        .chain(
            self.config
                .iter()
                .flat_map(|c| [OsString::from("-c"), OsString::from(c)]),
        )
        .collect()
    }

    /// Run `git <args>` in `cwd`; returns stdout.
    pub async fn run<S: AsRef<OsStr>>(
        &self,
        step: &'static str,
        cwd: &Path,
        args: &[S],
        cancel: &CancellationToken,
    ) -> Result<String, GitError> {
        self.run_plain(step, cwd, args, &[0], cancel)
            .await
            .map(|(_, out)| out)
    }

    /// Run `git <args>` in `cwd` with `env` added to its environment (`GIT_INDEX_FILE` for a
    /// scratch index, say); returns stdout.
    pub async fn run_env<S: AsRef<OsStr>>(
        &self,
        step: &'static str,
        cwd: &Path,
        args: &[S],
        env: &[(&str, &str)],
        cancel: &CancellationToken,
    ) -> Result<String, GitError> {
        self.run_opts(RunOpts {
            step,
            cwd,
            args: &args.iter().map(|a| a.as_ref().to_os_string()).collect::<Vec<_>>(),
            stdin: None,
            extra_env: env,
            local_source: false,
            ok_codes: &[0],
            cancel,
        })
        .await
        .map(|(_, out)| out)
    }

    /// Run a git command that answers yes (exit 0) or no (exit 1), such as `diff --quiet`;
    /// any other exit is an error.
    pub async fn yes_no<S: AsRef<OsStr>>(
        &self,
        step: &'static str,
        cwd: &Path,
        args: &[S],
        cancel: &CancellationToken,
    ) -> Result<bool, GitError> {
        let (code, _) = self.run_plain(step, cwd, args, &[0, 1], cancel).await?;
        Ok(code == 0)
    }

    /// `git <args>` in `cwd` with no input, environment or transport of its own.
    async fn run_plain<S: AsRef<OsStr>>(
        &self,
        step: &'static str,
        cwd: &Path,
        args: &[S],
        ok_codes: &[i32],
        cancel: &CancellationToken,
    ) -> Result<(i32, String), GitError> {
        self.run_opts(RunOpts {
            step,
            cwd,
            args: &args.iter().map(|a| a.as_ref().to_os_string()).collect::<Vec<_>>(),
            stdin: None,
            extra_env: &[],
            local_source: false,
            ok_codes,
            cancel,
        })
        .await
    }

    /// Run git with the full set of options; returns (exit code, stdout).
    pub async fn run_opts(&self, o: RunOpts<'_>) -> Result<(i32, String), GitError> {
        let mut spec = ProcessSpec::new(&self.program)
            .args(self.base_args(o.local_source))
            .args(o.args.iter().cloned())
            .cwd(o.cwd)
            .timeout(self.timeout)
            .kill_grace(Duration::from_secs(2))
            .max_line_bytes(16 * 1024 * 1024)
            .max_output_bytes(256 * 1024 * 1024);
        spec.env = self.env.clone();
        for (k, v) in o.extra_env {
            spec = spec.env(k, v);
        }
        if let Some(data) = o.stdin {
            spec = spec.stdin(data.to_vec());
        }
        if let Some(r) = &self.record {
            spec = spec.record_group(r.clone());
        }
        let (outcome, stdout, stderr) = run_captured(spec, o.cancel).await?;
        match outcome.killed {
            Some(KillReason::Canceled) => return Err(GitError::Canceled { step: o.step }),
            Some(KillReason::Timeout) => return Err(GitError::Timeout { step: o.step }),
            Some(KillReason::OutputLimit) => {
                return Err(GitError::Failed {
                    step: o.step,
                    message: "output too large".into(),
                });
            }
            None => {}
        }
        let code = outcome.exit_code.unwrap_or(-1);
        if o.ok_codes.contains(&code) {
            return Ok((code, stdout));
        }
        // Redacted before it is cut to size: a secret cut in two would no longer be found.
        let (stderr, stdout) = (self.hide_paths(&stderr), self.hide_paths(&stdout));
        let message = summary::summarize(&self.redactor.redact(&stderr), &self.redactor.redact(&stdout));
        Err(if is_auth_failure(&stderr) {
            GitError::Auth {
                step: o.step,
                message,
            }
        } else if is_missing_repository(&stderr) {
            GitError::NotFound {
                step: o.step,
                message,
            }
        } else {
            GitError::Failed {
                step: o.step,
                message,
            }
        })
    }
}

/// Arguments of [`Git::run_opts`].
pub struct RunOpts<'a> {
    pub step: &'static str,
    pub cwd: &'a Path,
    pub args: &'a [OsString],
    pub stdin: Option<&'a [u8]>,
    pub extra_env: &'a [(&'a str, &'a str)],
    /// The command reads from a local repository (the mirror): allow the file transport.
    pub local_source: bool,
    /// Exit codes that are not failures.
    pub ok_codes: &'a [i32],
    pub cancel: &'a CancellationToken,
}

/// Whether git's stderr says the remote refused (or needed) credentials.
/// Whether git's stderr says there is no repository at the URL: a local path that does not
/// exist or is no repository, or a server answering "not found". Another attempt would find
/// nothing either.
pub fn is_missing_repository(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    (s.contains("fatal: repository '") && (s.contains("' not found") || s.contains("' does not exist")))
        || s.contains("does not appear to be a git repository")
        || s.contains("remote: repository not found")
}

pub fn is_auth_failure(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    [
        "authentication failed",
        "could not read username",
        "could not read password",
        "terminal prompts disabled",
        "http basic: access denied",
        "returned error: 401",
        "returned error: 403",
        "permission denied (publickey",
        "invalid username or password",
    ]
    .iter()
    .any(|n| s.contains(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_failures_are_recognised_from_git_stderr() {
        assert!(is_auth_failure(
            "remote: authentication required\nfatal: Authentication failed for 'http://h/r.git/'"
        ));
        assert!(is_auth_failure(
            "fatal: could not read Username for 'https://h': terminal prompts disabled"
        ));
        assert!(is_auth_failure(
            "fatal: unable to access 'https://h/': The requested URL returned error: 403"
        ));
        assert!(!is_auth_failure("fatal: repository 'http://h/x.git/' not found"));
        assert!(is_missing_repository(
            "fatal: repository 'http://h/x.git/' not found"
        ));
        assert!(is_missing_repository(
            "fatal: repository '/srv/nothing' does not exist"
        ));
        assert!(is_missing_repository(
            "remote: Repository not found.\nfatal: repository 'https://github.com/o/r.git/' not found"
        ));
        assert!(is_missing_repository(
            "fatal: '/tmp/x' does not appear to be a git repository\nfatal: Could not read from remote repository."
        ));
        assert!(!is_missing_repository(
            "fatal: couldn't find remote ref refs/heads/nope"
        ));
        assert!(!is_missing_repository(
            "fatal: unable to access 'https://h/': Could not resolve host: h"
        ));
        assert!(!is_auth_failure(
            "error: failed to push some refs (non-fast-forward)"
        ));
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        assert_eq!(format!("{:?}", Secret::new("tok-123456")), "Secret([redacted])");
    }
}
