//! "Use my local login": the files in which each agent CLI keeps the login of `claude
//! /login`, `codex login` or `opencode auth login`, brought from the user's home into a run's
//! private home, and written back when the CLI refreshed them.
//!
//! Only the named login files are brought in, never the rest of the user's config directory
//! (transcripts, history, settings, other projects). They are *copied*, not linked: the CLIs
//! write their token files atomically (a new file renamed over the old one), which would
//! replace a symlink by a file in the throw-away home and lose a refreshed token with it. So
//! after the run, a login file the CLI changed is copied back to the user's home — unless the
//! user's copy changed meanwhile too (their own CLI refreshed it), in which case theirs is kept.

use std::path::{Path, PathBuf};

use crate::events;
use crate::{AgentError, EventSink};

/// The login files of `agent`, relative to HOME; empty when agentpool cannot use its local
/// login (the agent is unknown, or its login needs more than files, e.g. Gemini's which also
/// depends on the auth type chosen in its settings).
pub fn files_of(agent: &str) -> &'static [&'static str] {
    match agent {
        // Claude Code reads its OAuth token from `$CLAUDE_CONFIG_DIR/.credentials.json`; the
        // account details in `~/.claude.json` are not needed to authenticate and are not shared.
        crate::claude_code::NAME => &[".claude/.credentials.json"],
        crate::codex::NAME => &[".codex/auth.json"],
        crate::opencode::NAME => &[".local/share/opencode/auth.json"],
        _ => &[],
    }
}

/// The agents whose local login agentpool can use.
pub fn supported() -> Vec<&'static str> {
    [
        crate::claude_code::NAME,
        crate::codex::NAME,
        crate::gemini::NAME,
        crate::opencode::NAME,
    ]
    .into_iter()
    .filter(|a| !files_of(a).is_empty())
    .collect()
}

/// The secret values in `agent`'s login files under `user_home` ([`secrets_in`]); none when
/// it has no such files or they cannot be read (then there is nothing to lend either).
pub fn local_secrets(agent: &str, user_home: &Path) -> Vec<String> {
    files_of(agent)
        .iter()
        .filter_map(|rel| std::fs::read(user_home.join(rel)).ok())
        .flat_map(|data| secrets_in(&data))
        .collect()
}

/// The shortest string value of a login file taken for a secret.
pub const MIN_SECRET_CHARS: usize = 16;

/// The values in a login file that must be masked wherever the run's output goes: every JSON
/// string value (at any depth) of at least [`MIN_SECRET_CHARS`] characters without whitespace.
/// The CLIs' files hold access, refresh and id tokens and API keys among a few short or
/// spaced fields (a token type, an expiry, scopes, an e-mail), so a rule on the shape of the
/// value keeps working when a CLI renames or adds a field, and masking an odd long
/// identifier as well costs nothing. A file that is not JSON yields nothing.
pub fn secrets_in(data: &[u8]) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s)
                if s.chars().count() >= MIN_SECRET_CHARS && !s.chars().any(char::is_whitespace) =>
            {
                out.push(s.clone());
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            serde_json::Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        walk(&v, &mut out);
    }
    out
}

/// The login files brought into one run's home, to give back after it.
#[derive(Debug, Default)]
pub struct Borrowed {
    files: Vec<BorrowedFile>,
}

#[derive(Debug)]
struct BorrowedFile {
    user: PathBuf,
    run: PathBuf,
    original: Vec<u8>,
}

/// Copy `agent`'s login files that exist under `user_home` to the same place under
/// `run_home` (mode 0600). Files the user does not have are skipped: the preflight then names
/// what is missing.
pub fn bring_in(agent: &str, user_home: &Path, run_home: &Path) -> Result<Borrowed, AgentError> {
    let mut borrowed = Borrowed::default();
    for rel in files_of(agent) {
        let user = user_home.join(rel);
        let original = match std::fs::read(&user) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(AgentError::Io(std::io::Error::new(
                    e.kind(),
                    format!("cannot read the local login {}: {e}", user.display()),
                )));
            }
        };
        let run = run_home.join(rel);
        write_private(&run, &original)?;
        borrowed.files.push(BorrowedFile { user, run, original });
    }
    Ok(borrowed)
}

impl Borrowed {
    /// The secret values of the files brought in ([`secrets_in`]).
    pub fn secrets(&self) -> Vec<String> {
        self.files.iter().flat_map(|f| secrets_in(&f.original)).collect()
    }

    /// Write back login files the CLI changed (a refreshed token), unless the user's file
    /// changed too; report what happened as log events (never the contents).
    pub fn give_back(self, events: &dyn EventSink) {
        for f in self.files {
            let Ok(now) = std::fs::read(&f.run) else {
                continue;
            };
            if now == f.original || now.is_empty() {
                continue;
            }
            let note = match std::fs::read(&f.user) {
                Ok(theirs) if theirs == f.original => match replace_private(&f.user, &now) {
                    Ok(()) => format!("the agent refreshed its login; saved to {}", f.user.display()),
                    Err(e) => format!(
                        "could not save the agent's refreshed login to {}: {e}",
                        f.user.display()
                    ),
                },
                _ => format!(
                    "the agent refreshed its login but {} changed meanwhile; kept yours",
                    f.user.display()
                ),
            };
            events.emit(events::log("agentpool", &note));
        }
    }
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(data)
}

/// Replace `path` atomically (a sibling temporary file renamed over it), as the CLIs do, so a
/// CLI reading it at the same time sees the old or the new token, never half of one.
fn replace_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.agentpool-{}", std::process::id()));
    write_private(&tmp, data)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Sink(std::sync::Mutex<Vec<String>>);
    impl EventSink for Sink {
        fn emit(&self, e: agentpool_core::NewEvent) {
            self.0.lock().unwrap().push(format!("{:?}", e));
        }
    }

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let user = d.path().join("user");
        let run = d.path().join("run");
        std::fs::create_dir_all(user.join(".claude")).unwrap();
        std::fs::write(user.join(".claude/.credentials.json"), "old").unwrap();
        std::fs::write(user.join(".claude/history.jsonl"), "private").unwrap();
        std::fs::write(user.join(".claude.json"), "{}").unwrap();
        (d, user, run)
    }

    #[test]
    fn only_the_login_file_is_brought_in_privately() {
        let (_d, user, run) = setup();
        let b = bring_in("claude-code", &user, &run).unwrap();
        assert_eq!(
            std::fs::read_to_string(run.join(".claude/.credentials.json")).unwrap(),
            "old"
        );
        assert!(!run.join(".claude/history.jsonl").exists());
        assert!(!run.join(".claude.json").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(run.join(".claude/.credentials.json"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        b.give_back(&Sink::default());
        assert_eq!(
            std::fs::read_to_string(user.join(".claude/.credentials.json")).unwrap(),
            "old"
        );
    }

    #[test]
    fn a_refreshed_token_is_written_back_unless_the_user_s_changed_too() {
        let (_d, user, run) = setup();
        let b = bring_in("claude-code", &user, &run).unwrap();
        // The CLI replaces its token file (rename over it), as on a refresh.
        std::fs::write(run.join(".claude/new"), "refreshed").unwrap();
        std::fs::rename(run.join(".claude/new"), run.join(".claude/.credentials.json")).unwrap();
        let sink = Sink::default();
        b.give_back(&sink);
        assert_eq!(
            std::fs::read_to_string(user.join(".claude/.credentials.json")).unwrap(),
            "refreshed"
        );
        assert!(!format!("{:?}", sink.0.lock().unwrap()).contains("refreshed\""));

        let b = bring_in("claude-code", &user, &run).unwrap();
        std::fs::write(run.join(".claude/.credentials.json"), "mine").unwrap();
        std::fs::write(user.join(".claude/.credentials.json"), "theirs").unwrap();
        let sink = Sink::default();
        b.give_back(&sink);
        assert_eq!(
            std::fs::read_to_string(user.join(".claude/.credentials.json")).unwrap(),
            "theirs"
        );
        assert!(format!("{:?}", sink.0.lock().unwrap()).contains("kept yours"));
    }

    #[test]
    fn the_tokens_of_a_login_file_are_its_secrets() {
        let (_d, user, run) = setup();
        let file = serde_json::json!({
            "claudeAiOauth": {
                "accessToken": "sk-ant-oat01-access-0123456789",
                "refreshToken": "sk-ant-ort01-refresh-0123456789",
                "expiresAt": 1_900_000_000_000u64,
                "scopes": ["user:inference", "user:profile"],
                "subscriptionType": "max",
            },
            "note": "a long value with spaces is prose",
        });
        std::fs::write(user.join(".claude/.credentials.json"), file.to_string()).unwrap();
        let mut found = local_secrets("claude-code", &user);
        found.sort();
        let expected = [
            "sk-ant-oat01-access-0123456789",
            "sk-ant-ort01-refresh-0123456789",
        ];
        assert_eq!(found, expected);
        let b = bring_in("claude-code", &user, &run).unwrap();
        let mut lent = b.secrets();
        lent.sort();
        assert_eq!(lent, expected);
        assert!(secrets_in(b"not json").is_empty());
        assert!(
            local_secrets("codex", &user).is_empty(),
            "codex has no login file here"
        );
    }

    #[test]
    fn missing_login_files_are_skipped_and_gemini_is_not_supported() {
        let d = tempfile::tempdir().unwrap();
        let b = bring_in("codex", d.path(), &d.path().join("run")).unwrap();
        assert!(b.files.is_empty());
        assert!(files_of("gemini").is_empty());
        assert_eq!(supported(), vec!["claude-code", "codex", "opencode"]);
    }
}
