//! A task's git workspace: cold clone, or the warm path through a bare mirror cache; the work
//! branch checked out at the base ref; and after the run, commit, diff stat and push.
//!
//! Warm path: the mirror (`git clone --mirror` on first use) lives in the cache dir; each task
//! gets its own `git clone --local` of it. On one filesystem that hard-links the mirror's
//! (immutable) pack files instead of copying them, so it costs about as little as a worktree,
//! yet every task has its own object store, refs, index and config: no task can see or corrupt
//! another's state, and a later `fetch --prune` or repack of the mirror cannot pull objects
//! from under a running task (which `--shared`/alternates or `git worktree` would allow).
//!
//! The mirror's `fetch --prune` (a round trip to the remote, which usually brings nothing)
//! runs at the same time as the task's clone and checkout from the mirror as it stood; when
//! the fetch moved a ref, that speculative workspace is dropped and made again from the
//! fetched mirror. A warm task on an unchanged remote thus waits for the slower of the two, in
//! five git processes (fetch, clone, set-url, resolve, checkout).
//!
//! What happens after the run (commit, diff stat, push) is in the `finish` module, with what
//! it checks and undoes first in `repo_state` and `nested`, the secret check in `leaks`, and
//! what it asks the remote in `remote`.

mod finish;
mod leaks;
mod nested;
mod remote;
mod repo_state;

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use agentpool_core::{BranchName, PreparePhases, RepoUrl, TaskId};
use tokio_util::sync::CancellationToken;

use crate::git::{Git, GitError, RunOpts};
pub use crate::mirror::MirrorLocks;
use crate::mirror::{head_is_stale, lock_file, mirror_name, ref_state, remote_head, stamp_head};
pub(crate) use finish::scratch_index;
pub use finish::{CommitOptions, FinishError, FinishFault, PostRun, finish, parse_diff_z};

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
    /// The commit the remote's work branch was at when the workspace was made, if the remote had
    /// it: then a result can name the branch although nothing is pushed now. Read from the
    /// clone's refs before the run, which may rewrite them.
    pub remote_branch: Option<String>,
    /// A commit of an earlier attempt of this task that the remote work branch holds but the
    /// task's record does not (its worker was lost after the push, before the report): this
    /// attempt started again from where that one did, and its push replaces that commit (with
    /// a lease on it, so nothing else is overwritten).
    pub replaces: Option<String>,
    pub url: RepoUrl,
    /// Whether the warm (mirror) path was used.
    pub warm: bool,
    /// Time spent fetching/cloning and checking out.
    pub prepare_ms: u64,
    /// Where that time went.
    pub phases: PreparePhases,
}

/// Inputs of [`prepare`].
pub struct PrepareRequest<'a> {
    pub task_id: TaskId,
    pub url: &'a RepoUrl,
    pub base_ref: Option<&'a str>,
    pub branch: &'a BranchName,
    /// Set when the work branch is the task's own (it names no branch and follows up no
    /// task), so that no other task pushes to it: holds the commit the task's record names, if
    /// any. A commit of this task's on the remote branch that the record does not name was
    /// pushed by an attempt whose report was lost; see [`Workspace::replaces`].
    pub own_branch: Option<Option<&'a str>>,
}

/// The git commands of one preparation: counted, for the phase report.
struct Steps<'a> {
    git: &'a Git,
    cancel: &'a CancellationToken,
    processes: AtomicU32,
    /// Where the remote's work branch was, as the last start resolved found it (`None`: the
    /// remote has no such branch); when it is there, the task continues it.
    branch_at_start: std::sync::Mutex<Option<String>>,
}

impl Steps<'_> {
    async fn run<S: AsRef<std::ffi::OsStr>>(
        &self,
        step: &'static str,
        cwd: &Path,
        args: &[S],
    ) -> Result<String, GitError> {
        self.processes.fetch_add(1, Ordering::Relaxed);
        self.git.run(step, cwd, args, self.cancel).await
    }

    async fn run_opts(&self, o: RunOpts<'_>) -> Result<(i32, String), GitError> {
        self.processes.fetch_add(1, Ordering::Relaxed);
        self.git.run_opts(o).await
    }
}

fn ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
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
    // The task's directory is private by its unlisted name: git's messages show neither.
    let git = &git
        .clone()
        .hiding_path(&dir, "<workspace>")
        .hiding_path(&task_dir, "<task dir>");
    let url = req.url.as_str();
    let steps = Steps {
        git,
        cancel,
        processes: AtomicU32::new(0),
        branch_at_start: std::sync::Mutex::new(None),
    };
    let mut phases = PreparePhases::default();
    let target = Target {
        task_dir: &task_dir,
        dir: &dir,
        url,
        base_ref: req.base_ref,
        branch: req.branch,
    };

    let (warm, start) = match &cfg.mirror_dir {
        None => (false, clone(&steps, None, &target, &mut phases).await?),
        Some(mirrors) => {
            let mirror = mirrors.join(mirror_name(url));
            let lock = locks.get(&mirror);
            let held = lock.lock().await;
            tokio::fs::create_dir_all(mirrors).await?;
            let file_lock = lock_file(mirror.with_extension("lock")).await?;
            let hit = mirror.join("HEAD").exists();
            let start = if hit {
                warm_from_existing(&steps, &mirror, &target, &mut phases).await?
            } else {
                let t = Instant::now();
                create_mirror(&steps, mirrors, &mirror, url).await?;
                phases.fetch_ms = ms(t);
                clone(&steps, Some(&mirror), &target, &mut phases).await?
            };
            crate::mirror_cache::record_use(&mirror, hit);
            drop(file_lock);
            drop(held);
            (true, start)
        }
    };

    // Keep the config as prepared: the run may rewrite .git/config (remotes, url rewrites,
    // helpers), and the post-run steps run with credentials. Likewise the exclude file, which
    // decides what `git add --all` takes.
    tokio::fs::copy(dir.join(".git/config"), task_dir.join(repo_state::SAVED_CONFIG)).await?;
    match tokio::fs::copy(
        dir.join(".git/info/exclude"),
        task_dir.join(repo_state::SAVED_EXCLUDE),
    )
    .await
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        other => {
            other?;
        }
    }
    let remote_branch = steps.branch_at_start.lock().ok().and_then(|mut at| at.take());
    let (start, replaces) = match req.own_branch {
        Some(recorded) if remote_branch.is_some() => {
            restart_lost_attempt(&steps, &target, req.task_id, start, recorded).await?
        }
        _ => (start, None),
    };
    phases.git_processes = steps.processes.load(Ordering::Relaxed);
    Ok(Workspace {
        task_dir,
        dir,
        home,
        branch: req.branch.clone(),
        base_sha: start,
        remote_branch,
        replaces,
        url: req.url.clone(),
        warm,
        prepare_ms: ms(started),
        phases,
    })
}

/// Where a task's checkout goes and what it starts from.
struct Target<'a> {
    task_dir: &'a Path,
    dir: &'a Path,
    url: &'a str,
    base_ref: Option<&'a str>,
    branch: &'a BranchName,
}

/// An existing mirror: fetch it and, at the same time, clone and check out from it as it is.
/// The fetch is the slow part (a round trip to the remote) and usually changes nothing; when it
/// did change a ref, the speculative checkout is thrown away and made again from the updated
/// mirror. Either way the task starts from what the remote has now.
async fn warm_from_existing(
    steps: &Steps<'_>,
    mirror: &Path,
    target: &Target<'_>,
    phases: &mut PreparePhases,
) -> Result<String, WorkspaceError> {
    let before = ref_state(mirror).await?;
    let fetch = async {
        let t = Instant::now();
        // The mirror's name is derived from the URL, and it was cloned from it: its origin
        // is already the URL.
        let r = steps
            .run(
                "fetch",
                mirror,
                &[
                    "fetch",
                    "--quiet",
                    "--prune",
                    // Nothing reads them, and on a long history the forced-update check walks it.
                    "--no-write-fetch-head",
                    "--no-show-forced-updates",
                    "origin",
                ],
            )
            .await;
        (r, ms(t))
    };
    let mut spec = PreparePhases::default();
    let (fetched, speculative) = tokio::join!(fetch, clone(steps, Some(mirror), target, &mut spec));
    let (fetched, fetch_ms) = fetched;
    phases.fetch_ms = fetch_ms;
    fetched?;
    let after = ref_state(mirror).await?;
    // The default branch matters only to a task that names no base.
    let head_moved =
        target.base_ref.is_none() && head_is_stale(mirror, &after).await && learn_head(steps, mirror).await?;
    let changed = head_moved || after != before;
    match speculative {
        Ok(start) if !changed => {
            phases.clone_ms = spec.clone_ms;
            phases.checkout_ms = spec.checkout_ms;
            Ok(start)
        }
        // Nothing changed: the same clone would fail the same way (an unknown base ref).
        Err(e) if !changed => Err(e),
        // Stale (or failed while the mirror changed under it): again, from the fetched mirror.
        _ => {
            if target.dir.exists() {
                tokio::fs::remove_dir_all(target.dir).await?;
            }
            clone(steps, Some(mirror), target, phases).await
        }
    }
}

/// Ask the remote which branch is its default and point the mirror's `HEAD` there (a fetch
/// never moves it). Returns whether it moved. When the remote does not say (an empty
/// repository, a server without symrefs), `HEAD` stays as it is.
async fn learn_head(steps: &Steps<'_>, mirror: &Path) -> Result<bool, GitError> {
    let out = steps
        .run("ls-remote", mirror, &["ls-remote", "--symref", "origin", "HEAD"])
        .await?;
    let Some(head) = remote_head(&out) else {
        return Ok(false);
    };
    let current = tokio::fs::read_to_string(mirror.join("HEAD")).await?;
    let moved = current.trim().strip_prefix("ref: ") != Some(head);
    if moved {
        steps
            .run("symbolic-ref", mirror, &["symbolic-ref", "HEAD", head])
            .await?;
    }
    stamp_head(mirror).await?;
    Ok(moved)
}

/// The task's own clone: of the remote, or of `mirror` with its origin then pointed at the
/// remote; the work branch checked out. Returns the start commit.
async fn clone(
    steps: &Steps<'_>,
    mirror: Option<&Path>,
    target: &Target<'_>,
    phases: &mut PreparePhases,
) -> Result<String, WorkspaceError> {
    let t = Instant::now();
    let mut args: Vec<OsString> = vec!["clone".into(), "--quiet".into()];
    if mirror.is_some() {
        args.push("--local".into());
    }
    let source: OsString = mirror.map_or_else(|| target.url.into(), Into::into);
    args.extend(["--no-checkout".into(), "--".into(), source, target.dir.into()]);
    steps
        .run_opts(RunOpts {
            step: "clone",
            cwd: target.task_dir,
            args: &args,
            stdin: None,
            extra_env: &[],
            local_source: mirror.is_some(),
            ok_codes: &[0],
            cancel: steps.cancel,
        })
        .await?;
    if mirror.is_some() {
        steps
            .run(
                "remote",
                target.dir,
                &["remote", "set-url", "origin", "--", target.url],
            )
            .await?;
    }
    phases.clone_ms = ms(t);
    let t = Instant::now();
    let start = checkout(steps, target).await?;
    phases.checkout_ms = ms(t);
    Ok(start)
}

/// Resolve the start commit and check out the work branch there.
async fn checkout(steps: &Steps<'_>, target: &Target<'_>) -> Result<String, WorkspaceError> {
    let start = resolve_start(steps, target.dir, target.base_ref, Some(target.branch)).await?;
    check_out_at(steps, target, &start).await?;
    Ok(start)
}

/// Point the work branch at `start` and check it out.
async fn check_out_at(steps: &Steps<'_>, target: &Target<'_>, start: &str) -> Result<(), WorkspaceError> {
    steps
        .run(
            "checkout",
            target.dir,
            &[
                "checkout",
                "--quiet",
                "--no-track",
                "-B",
                target.branch.as_str(),
                start,
                "--",
            ],
        )
        .await?;
    Ok(())
}

/// The remote's work branch, which the task is about to continue, ends in `head`. When that is
/// a commit of this very task (its `Agentpool-Task` trailer) that its record does not name
/// (`recorded`), an earlier attempt pushed it and was lost before it could report: continuing
/// would run the task a second time on top of its own first result (an appended line twice).
/// The work branch goes back to where that attempt started — where `head` forks from the
/// task's base — and the push will replace `head`. Returns the start and the commit replaced.
async fn restart_lost_attempt(
    steps: &Steps<'_>,
    target: &Target<'_>,
    task: TaskId,
    head: String,
    recorded: Option<&str>,
) -> Result<(String, Option<String>), WorkspaceError> {
    if recorded == Some(head.as_str()) {
        return Ok((head, None));
    }
    let message = steps
        .run(
            "log",
            target.dir,
            &["log", "-1", "--format=%B", head.as_str(), "--"],
        )
        .await?;
    let ours = format!("{}: {task}", crate::pipeline::TASK_TRAILER);
    if !message.lines().any(|l| l.trim() == ours) {
        return Ok((head, None));
    }
    let base = resolve_start(steps, target.dir, target.base_ref, None).await?;
    let (code, fork) = steps
        .run_opts(RunOpts {
            step: "merge-base",
            cwd: target.dir,
            args: &["merge-base", base.as_str(), head.as_str()].map(OsString::from),
            stdin: None,
            extra_env: &[],
            local_source: false,
            ok_codes: &[0, 1],
            cancel: steps.cancel,
        })
        .await?;
    // No common history (the base was rewritten): start from the base as it is.
    let start = if code == 0 { fork.trim().to_string() } else { base };
    check_out_at(steps, target, &start).await?;
    Ok((start, Some(head)))
}

/// Create the mirror of `url` (a cache miss).
async fn create_mirror(steps: &Steps<'_>, mirrors: &Path, mirror: &Path, url: &str) -> Result<(), GitError> {
    tokio::fs::create_dir_all(mirrors).await?;
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
    steps.run("clone", mirrors, &args).await?;
    // The clone set HEAD to the remote's default branch.
    stamp_head(&tmp).await?;
    tokio::fs::rename(&tmp, mirror).await?;
    Ok(())
}

/// The commit the work branch starts from: the work branch itself when the remote already has
/// it (a follow-up continues it), else the base ref, else the remote's default branch.
async fn resolve_start(
    steps: &Steps<'_>,
    dir: &Path,
    base_ref: Option<&str>,
    branch: Option<&BranchName>,
) -> Result<String, WorkspaceError> {
    let existing = branch.map(|b| format!("refs/remotes/origin/{}", b.as_str()));
    let mut refs: Vec<String> = existing.iter().cloned().collect();
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
    let out = steps.run("rev-parse", dir, &args).await?;
    let mut found: HashMap<&str, &str> = HashMap::new();
    for line in out.lines() {
        let mut f = line.split(' ');
        if let (Some(name), Some(obj)) = (f.next(), f.next()) {
            let peeled = f.next().filter(|p| !p.is_empty()).unwrap_or(obj);
            found.insert(name, peeled);
        }
    }
    // Patterns also match refs below them (`main` matches `main/x`): only exact names count.
    if branch.is_some()
        && let Ok(mut at) = steps.branch_at_start.lock()
    {
        *at = existing
            .as_deref()
            .and_then(|r| found.get(r))
            .map(|s| s.to_string());
    }
    if let Some(sha) = refs.iter().find_map(|r| found.get(r.as_str())) {
        return Ok((*sha).to_string());
    }
    if let Some(b) = fallback
        && let Some(sha) = rev_parse(steps, dir, &b).await?
    {
        return Ok(sha);
    }
    Err(WorkspaceError::BadRef(match base_ref {
        Some(b) => format!("base ref {b:?} not found in the repository"),
        None => no_default_branch(steps, dir).await?,
    }))
}

/// Why a repository gave no default branch: it has no branch at all, or its `HEAD` names one
/// it does not have (a bare repository made with `master` as `HEAD` and pushed `main` to) —
/// then the task can still start from one of those it has, named as its base.
async fn no_default_branch(steps: &Steps<'_>, dir: &Path) -> Result<String, GitError> {
    let args = [
        "for-each-ref",
        "--count=4",
        "--format=%(refname:lstrip=3)",
        "refs/remotes/origin/",
    ]
    .map(String::from);
    let out = steps.run("rev-parse", dir, &args).await?;
    let branches: Vec<&str> = out.lines().filter(|b| !b.is_empty() && *b != "HEAD").collect();
    Ok(if branches.is_empty() {
        "the repository has no branches (is it empty?)".to_string()
    } else {
        format!(
            "the repository's HEAD names a branch it does not have, so there is no default branch to \
             start from; name a base ref (it has {})",
            branches.join(", ")
        )
    })
}

async fn rev_parse(steps: &Steps<'_>, dir: &Path, rev: &str) -> Result<Option<String>, GitError> {
    let spec = format!("{rev}^{{commit}}");
    let args: Vec<OsString> = vec![
        "rev-parse".into(),
        "--verify".into(),
        "--quiet".into(),
        "--end-of-options".into(),
        spec.into(),
    ];
    let (code, out) = steps
        .run_opts(RunOpts {
            step: "rev-parse",
            cwd: dir,
            args: &args,
            stdin: None,
            extra_env: &[],
            local_source: false,
            ok_codes: &[0, 1, 128],
            cancel: steps.cancel,
        })
        .await?;
    let sha = out.trim();
    Ok((code == 0 && !sha.is_empty()).then(|| sha.to_string()))
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
