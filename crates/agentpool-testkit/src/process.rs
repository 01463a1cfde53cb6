//! Processes as tests observe them: whether one still runs, the pids a script printed, and a
//! pid file a scripted agent's shell tool writes so a test knows the tool runs.

use std::path::PathBuf;
use std::time::Duration;

/// Whether `pid` still runs: it exists and is neither a zombie nor dead.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().and_then(|r| r.split_whitespace().next());
            !matches!(state, Some("Z" | "X"))
        }
        Err(_) => false,
    }
}

/// The pids a script printed as `pid N` lines.
pub fn pids(lines: &[String]) -> Vec<i32> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("pid "))
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

/// A file, in a directory of its own, that a shell writes its pid into.
pub struct PidFile {
    dir: tempfile::TempDir,
}

impl PidFile {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            dir: tempfile::tempdir()?,
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("pid")
    }

    /// A shell command that writes its pid here, then sleeps until it is killed.
    pub fn sleeper(&self) -> String {
        format!("echo $$ > {}; sleep 300", self.path().display())
    }

    /// The pid, once written.
    pub fn read(&self) -> Option<i32> {
        std::fs::read_to_string(self.path())
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// The pid, waiting up to `limit` for it; panics with `what_ran()` when it never comes.
    pub async fn wait(&self, limit: Duration, what_ran: impl Fn() -> String) -> i32 {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(pid) = self.read() {
                return pid;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the shell never wrote its pid: {}",
                what_ran()
            );
            // A file appearing has no event to wait on.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// An executable file `name` in `dir` (made if missing) holding `text`, such as a stand-in for
/// an agent's CLI; its path.
pub fn script(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).expect("create the script's directory");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("make it executable");
    path
}
