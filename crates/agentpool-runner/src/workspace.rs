//! A task's git workspace: cold clone, or the warm path through a bare mirror cache; the work
//! branch checked out at the base ref; and after the run, commit, diff stat and push.
//!
//! Warm path: the mirror (`git clone --mirror`, then `git fetch --prune` per task) lives in
//! the cache dir; each task gets its own `git clone --local` of it. On one filesystem that
//! hard-links the mirror's (immutable) pack files instead of copying them, so it costs about as
//! little as a worktree, yet every task has its own object store, refs, index and config: no
//! task can see or corrupt another's state, and a later `fetch --prune` or repack of the
//! mirror cannot pull objects from under a running task (which `--shared`/alternates or
//! `git worktree` would allow).

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Instant;

use agentpool_core::{BranchName, FileChange, RepoUrl, TaskId};
use tokio_util::sync::CancellationToken;

use crate::git::{Git, GitError, RunOpts};

/// Where workspaces and the mirror cache live.
#[derive(Debug, Clone)]
pub struct WorkspaceConfig {
    /// Per-task directories are created under here (and removed after the task).
    pub root: PathBuf,
    /// Bare mirrors; `None` means every task clones from the remote (cold path).
    pub mirror_dir: Option<PathBuf>,
}

/// Why a workspace could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error(transparent)]
    Git(#[from] GitError),
    /// The base ref does not exist, or the repository is empty: the task cannot run.
    #[error("{0}")]
    BadRef(String),
    #[error("workspace i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// A prepared workspace.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The task's directory (repository, HOME, scratch), removed by [`Workspace::remove`].
    pub task_dir: PathBuf,
    /// The checkout.
    pub dir: PathBuf,
    /// A private HOME for the command or agent.
    pub home: PathBuf,
    pub branch: BranchName,
    /// The commit the work branch started from.
    pub base_sha: String,
    pub url: RepoUrl,
    /// Whether the warm (mirror) path was used.
    pub warm: bool,
    /// Time spent fetching/cloning and checking out.
    pub prepare_ms: u64,
}

/// What the post-run step produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PostRun {
    /// HEAD after the run, when it differs from the base.
    pub commit_sha: Option<String>,
    pub files: Vec<FileChange>,
    pub pushed: bool,
    pub push_result: Option<String>,
}

/// How to commit what the run changed.
#[derive(Debug, Clone)]
pub struct CommitOptions {
    pub message: String,
    pub author_name: String,
    pub author_email: String,
}

/// Serializes fetches into one mirror within this process (git's own ref locks would make
/// concurrent fetches fail rather than wait).
#[derive(Debug, Clone, Default)]
pub struct MirrorLocks(Arc<StdMutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>>);

impl MirrorLocks {
    /// The locks shared by every worker of this process (`agentpool up` runs several).
    pub fn global() -> Self {
        static GLOBAL: std::sync::OnceLock<MirrorLocks> = std::sync::OnceLock::new();
        GLOBAL.get_or_init(MirrorLocks::default).clone()
    }

    fn get(&self, path: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(path.to_path_buf()).or_default().clone()
    }
}

/// An exclusive `flock` on `<mirror>.lock`, so worker processes sharing a cache directory
/// take turns too. Released when dropped (the file is closed).
struct FileLock(#[allow(dead_code)] std::fs::File);

async fn lock_file(path: PathBuf) -> std::io::Result<FileLock> {
    tokio::task::spawn_blocking(move || {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        loop {
            // SAFETY: flock on a descriptor we own for the lifetime of the call.
            let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(FileLock(f));
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Inputs of [`prepare`].
pub struct PrepareRequest<'a> {
    pub task_id: TaskId,
    pub url: &'a RepoUrl,
    pub base_ref: Option<&'a str>,
    pub branch: &'a BranchName,
}

/// Clone (or warm-clone) the repository for a task and check out its work branch.
pub async fn prepare(
    git: &Git,
    cfg: &WorkspaceConfig,
    locks: &MirrorLocks,
    req: PrepareRequest<'_>,
    cancel: &CancellationToken,
) -> Result<Workspace, WorkspaceError> {
    let started = Instant::now();
    let task_dir = cfg.root.join(req.task_id.to_string());
    if task_dir.exists() {
        tokio::fs::remove_dir_all(&task_dir).await?;
    }
    let home = task_dir.join("home");
    tokio::fs::create_dir_all(&home).await?;
    let dir = task_dir.join("repo");
    let url = req.url.as_str();

    let warm = match &cfg.mirror_dir {
        None => {
            let args: Vec<OsString> = vec![
                "clone".into(),
                "--quiet".into(),
                "--no-checkout".into(),
                "--".into(),
                url.into(),
                dir.clone().into(),
            ];
            git.run("clone", &task_dir, &args, cancel).await?;
            false
        }
        Some(mirrors) => {
            let mirror = mirrors.join(mirror_name(url));
            let lock = locks.get(&mirror);
            let held = lock.lock().await;
            tokio::fs::create_dir_all(mirrors).await?;
            let file_lock = lock_file(mirror.with_extension("lock")).await?;
            let hit = mirror.join("HEAD").exists();
            refresh_mirror(git, mirrors, &mirror, url, cancel).await?;
            crate::mirror_cache::record_use(&mirror, hit);
            let args: Vec<OsString> = vec![
                "clone".into(),
                "--quiet".into(),
                "--local".into(),
                "--no-checkout".into(),
                "--".into(),
                mirror.clone().into(),
                dir.clone().into(),
            ];
            git.run_opts(RunOpts {
                step: "clone",
                cwd: &task_dir,
                args: &args,
                stdin: None,
                extra_env: &[],
                local_source: true,
                ok_codes: &[0],
                cancel,
            })
            .await?;
            drop(file_lock);
            drop(held);
            git.run(
                "remote",
                &dir,
                &["remote", "set-url", "origin", "--", url],
                cancel,
            )
            .await?;
            true
        }
    };

    let start = resolve_start(git, &dir, req.base_ref, req.branch, cancel).await?;
    git.run(
        "checkout",
        &dir,
        &[
            "checkout",
            "--quiet",
            "--no-track",
            "-B",
            req.branch.as_str(),
            start.as_str(),
            "--",
        ],
        cancel,
    )
    .await?;
    // Keep the config as prepared: the run may rewrite .git/config (remotes, url rewrites,
    // helpers), and the post-run steps run with credentials.
    tokio::fs::copy(dir.join(".git/config"), task_dir.join("git-config.orig")).await?;
    Ok(Workspace {
        task_dir,
        dir,
        home,
        branch: req.branch.clone(),
        base_sha: start,
        url: req.url.clone(),
        warm,
        prepare_ms: started.elapsed().as_millis() as u64,
    })
}

/// A file-system-safe, stable name for the mirror of `url`.
fn mirror_name(url: &str) -> String {
    // FNV-1a: stable across builds (std's hasher is not guaranteed to be).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in url.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let tail: String = url
        .trim_end_matches('/')
        .trim_end_matches(".git")
        .rsplit(['/', ':'])
        .next()
        .unwrap_or("repo")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(40)
        .collect();
    let tail = tail.trim_start_matches('.');
    format!("{tail}-{h:016x}.git")
}

async fn refresh_mirror(
    git: &Git,
    mirrors: &Path,
    mirror: &Path,
    url: &str,
    cancel: &CancellationToken,
) -> Result<(), GitError> {
    tokio::fs::create_dir_all(mirrors).await?;
    if mirror.join("HEAD").exists() {
        // The mirror's name is derived from `url`, and it was cloned from it: its origin is
        // already `url`.
        git.run(
            "fetch",
            mirror,
            &["fetch", "--quiet", "--prune", "origin"],
            cancel,
        )
        .await?;
        return Ok(());
    }
    // Clone to a temporary name so an interrupted clone never looks like a mirror.
    let tmp = mirror.with_extension("tmp");
    if tmp.exists() {
        tokio::fs::remove_dir_all(&tmp).await?;
    }
    let args: Vec<OsString> = vec![
        "clone".into(),
        "--quiet".into(),
        "--mirror".into(),
        "--".into(),
        url.into(),
        tmp.clone().into(),
    ];
    git.run("clone", mirrors, &args, cancel).await?;
    tokio::fs::rename(&tmp, mirror).await?;
    Ok(())
}

/// The commit the work branch starts from: the work branch itself when the remote already has
/// it (a follow-up continues it), else the base ref, else the remote's default branch.
async fn resolve_start(
    git: &Git,
    dir: &Path,
    base_ref: Option<&str>,
    branch: &BranchName,
    cancel: &CancellationToken,
) -> Result<String, WorkspaceError> {
    let existing = format!("refs/remotes/origin/{}", branch.as_str());
    let mut refs = vec![existing];
    let mut fallback = None;
    match base_ref {
        Some(b) => {
            let b = b.strip_prefix("refs/heads/").unwrap_or(b);
            refs.push(format!("refs/remotes/origin/{b}"));
            refs.push(format!("refs/tags/{b}"));
            // Anything else git can resolve (a commit id, `HEAD~2`): asked only if no ref matched.
            fallback = Some(b.to_string());
        }
        None => refs.push("refs/remotes/origin/HEAD".to_string()),
    }
    // One git process for the refs a task usually starts from: those that exist, each with
    // the commit it points at (an annotated tag peeled to its commit).
    let mut args = vec![
        "for-each-ref".to_string(),
        "--format=%(refname) %(objectname) %(*objectname)".to_string(),
    ];
    args.extend(refs.iter().cloned());
    let out = git.run("rev-parse", dir, &args, cancel).await?;
    let mut found: HashMap<&str, &str> = HashMap::new();
    for line in out.lines() {
        let mut f = line.split(' ');
        if let (Some(name), Some(obj)) = (f.next(), f.next()) {
            let peeled = f.next().filter(|p| !p.is_empty()).unwrap_or(obj);
            found.insert(name, peeled);
        }
    }
    // Patterns also match refs below them (`main` matches `main/x`): only exact names count.
    if let Some(sha) = refs.iter().find_map(|r| found.get(r.as_str())) {
        return Ok((*sha).to_string());
    }
    if let Some(b) = fallback
        && let Some(sha) = rev_parse(git, dir, &b, cancel).await?
    {
        return Ok(sha);
    }
    Err(WorkspaceError::BadRef(match base_ref {
        Some(b) => format!("base ref {b:?} not found in the repository"),
        None => "the repository has no default branch (is it empty?)".to_string(),
    }))
}

async fn rev_parse(
    git: &Git,
    dir: &Path,
    rev: &str,
    cancel: &CancellationToken,
) -> Result<Option<String>, GitError> {
    let spec = format!("{rev}^{{commit}}");
    let args: Vec<OsString> = vec![
        "rev-parse".into(),
        "--verify".into(),
        "--quiet".into(),
        "--end-of-options".into(),
        spec.into(),
    ];
    let (code, out) = git
        .run_opts(RunOpts {
            step: "rev-parse",
            cwd: dir,
            args: &args,
            stdin: None,
            extra_env: &[],
            local_source: false,
            ok_codes: &[0, 1, 128],
            cancel,
        })
        .await?;
    let sha = out.trim();
    Ok((code == 0 && !sha.is_empty()).then(|| sha.to_string()))
}

/// Commit what the run changed (when `commit` is given), record the diff stat against the
/// base, and push the work branch (when `push`).
pub async fn finish(
    git: &Git,
    ws: &Workspace,
    commit: Option<&CommitOptions>,
    push: bool,
    cancel: &CancellationToken,
) -> Result<PostRun, GitError> {
    // Undo whatever the run did to the repository's configuration before git runs with
    // credentials again.
    tokio::fs::copy(ws.task_dir.join("git-config.orig"), ws.dir.join(".git/config")).await?;
    let dir = &ws.dir;
    if let Some(c) = commit {
        git.run("add", dir, &["add", "--all"], cancel).await?;
        let (code, _) = git
            .run_opts(RunOpts {
                step: "diff",
                cwd: dir,
                args: &["diff".into(), "--cached".into(), "--quiet".into()],
                stdin: None,
                extra_env: &[],
                local_source: false,
                ok_codes: &[0, 1],
                cancel,
            })
            .await?;
        if code == 1 {
            let env = [
                ("GIT_AUTHOR_NAME", c.author_name.as_str()),
                ("GIT_AUTHOR_EMAIL", c.author_email.as_str()),
                ("GIT_COMMITTER_NAME", c.author_name.as_str()),
                ("GIT_COMMITTER_EMAIL", c.author_email.as_str()),
            ];
            git.run_opts(RunOpts {
                step: "commit",
                cwd: dir,
                args: &[
                    "commit".into(),
                    "--quiet".into(),
                    "--no-verify".into(),
                    "--no-gpg-sign".into(),
                    "--file=-".into(),
                ],
                stdin: Some(c.message.as_bytes()),
                extra_env: &env,
                local_source: false,
                ok_codes: &[0],
                cancel,
            })
            .await?;
        }
    }
    let head = git
        .run("rev-parse", dir, &["rev-parse", "--verify", "HEAD"], cancel)
        .await?
        .trim()
        .to_string();
    if head == ws.base_sha {
        return Ok(PostRun::default());
    }
    let numstat = git
        .run(
            "diff",
            dir,
            &[
                "diff",
                "--numstat",
                "-z",
                "--no-renames",
                ws.base_sha.as_str(),
                head.as_str(),
                "--",
            ],
            cancel,
        )
        .await?;
    let mut out = PostRun {
        commit_sha: Some(head),
        files: parse_numstat_z(&numstat),
        ..PostRun::default()
    };
    if push {
        let refspec = format!("HEAD:refs/heads/{}", ws.branch.as_str());
        let stdout = git
            .run(
                "push",
                dir,
                &["push", "--porcelain", "--", ws.url.as_str(), refspec.as_str()],
                cancel,
            )
            .await?;
        out.pushed = true;
        out.push_result = Some(
            stdout
                .lines()
                .find(|l| l.contains(&format!("refs/heads/{}", ws.branch.as_str())))
                .map(|l| l.replace('\t', " ").trim().to_string())
                .unwrap_or_else(|| "pushed".to_string()),
        );
    }
    Ok(out)
}

impl Workspace {
    /// Delete the task's directory.
    pub async fn remove(&self) -> std::io::Result<()> {
        match tokio::fs::remove_dir_all(&self.task_dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Parse `git diff --numstat -z --no-renames`: `added\tremoved\tpath\0` per file, `-` counts
/// for binary files.
pub fn parse_numstat_z(s: &str) -> Vec<FileChange> {
    s.split('\0')
        .filter(|r| !r.trim().is_empty())
        .filter_map(|r| {
            let r = r.trim_start_matches('\n');
            let mut parts = r.splitn(3, '\t');
            let added = parts.next()?;
            let removed = parts.next()?;
            let path = parts.next()?;
            Some(FileChange {
                path: path.to_string(),
                added: added.parse().ok(),
                removed: removed.parse().ok(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numstat_with_binary_files_and_odd_names_is_parsed() {
        let out = "3\t1\tsrc/a b.rs\0-\t-\timg.png\0\n10\t0\tnew\tfile.txt\0";
        let files = parse_numstat_z(out);
        assert_eq!(
            files,
            vec![
                FileChange {
                    path: "src/a b.rs".into(),
                    added: Some(3),
                    removed: Some(1)
                },
                FileChange {
                    path: "img.png".into(),
                    added: None,
                    removed: None
                },
                FileChange {
                    path: "new\tfile.txt".into(),
                    added: Some(10),
                    removed: Some(0)
                },
            ]
        );
    }

    #[test]
    fn mirror_names_are_stable_safe_and_distinct() {
        let a = mirror_name("https://example.com/org/app.git");
        assert_eq!(a, mirror_name("https://example.com/org/app.git"));
        assert!(a.starts_with("app-") && a.ends_with(".git"));
        assert_ne!(a, mirror_name("https://example.com/other/app.git"));
        let odd = mirror_name("git@host:../../etc/passwd");
        assert!(!odd.contains('/') && !odd.starts_with('.'), "{odd}");
    }
}
