//! `agentpool demo`: a self-contained tour of the whole pipeline, offline, in seconds. It
//! creates a sample repository with a bare "remote", starts the embedded pool, runs command
//! tasks through claim → workspace → run → commit → push (with a dependency, and a task that
//! fails and is retried), and — when an agent CLI is installed — one real agent task against a
//! scripted local model endpoint. Then it shows the results and the commits on the remote.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use agentpool_agents::AgentConfig;
use agentpool_core::render::clip;
use agentpool_core::{Task, TaskId, TaskSpec, TaskState};
use agentpool_scripted_model::{ModelServer, Script, Step};
use anyhow::Context;

use super::follow::follow;
use crate::cli::DemoArgs;
use crate::config::Settings;
use crate::embedded::{Embedded, EmbeddedOptions};
use crate::exit::{Exit, ExitCode};
use crate::output::{self, StatusLine, Style};
use agentpool_client::Client;
use agentpool_core::protocol::TaskDetail;

/// The demo talks to people; with `--output json` it stays quiet and prints one JSON summary
/// at the end instead.
static QUIET: AtomicBool = AtomicBool::new(false);

macro_rules! say {
    ($($t:tt)*) => {
        if !QUIET.load(Ordering::Relaxed) {
            outln!($($t)*);
        }
    };
}

macro_rules! say_raw {
    ($($t:tt)*) => {
        if !QUIET.load(Ordering::Relaxed) {
            out!($($t)*);
        }
    };
}

/// A task of the tour, as submitted.
struct DemoTask {
    name: &'static str,
    what: String,
    id: TaskId,
}

pub async fn demo(settings: &Settings, args: DemoArgs) -> anyhow::Result<ExitCode> {
    QUIET.store(settings.json(), Ordering::Relaxed);
    let started = Instant::now();
    let s = Style::stdout();
    let tmp = tempfile::Builder::new()
        .prefix("agentpool-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let root = tmp.path().to_path_buf();
    let remote = sample_repo(&root)?;

    say!(
        "{}",
        s.bold("agentpool demo — the whole pipeline on this machine, offline")
    );
    say!();
    say!(
        "{} {}  a sample project with a bare \"remote\" (branch main, 1 commit)",
        s.cyan("▸ repository"),
        remote.display()
    );

    // An agent CLI, if one is installed, runs against a scripted endpoint (no network, no key).
    let agent = if args.no_agent { None } else { find_agent() };
    let model = match &agent {
        Some(_) => Some(
            ModelServer::start(Script::new([
                Step::shell("printf '# Notes\\n\\nWritten by an agent during agentpool demo.\\n' > NOTES.md"),
                Step::answer("I added NOTES.md with a short note."),
            ]))
            .await
            .context("cannot start the scripted model endpoint")?,
        ),
        None => None,
    };
    let mut extra_env = BTreeMap::new();
    if let (Some(a), Some(m)) = (&agent, &model) {
        extra_env = m.env_for(&a.name);
    }
    let pool = Embedded::start(EmbeddedOptions {
        data_dir: root.join("data"),
        database_url: crate::config::sqlite_url(&root.join("data").join("agentpool.db")),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        workers: 2,
        concurrency: 2,
        agents: Vec::new(),
        labels: Vec::new(),
        extra_env,
        agent_bin_dir: agent.as_ref().and_then(|a| a.bin_dir.clone()),
        access: Default::default(),
        runner: Default::default(),
        retention: agentpool_server::DEFAULT_RETENTION,
        // Nothing of the demo shows them.
        agent_versions: false,
    })
    .await?;
    say!(
        "{} {}  server + 2 in-process workers × 2 slots, SQLite in {}",
        s.cyan("▸ pool      "),
        pool.url,
        root.join("data").display()
    );
    say!();

    let client = Client::new(&pool.url, None)?;
    let outcome = tour(&client, &s, &remote, &root, agent.as_ref()).await;
    pool.stop().await?;
    drop(model);

    let result = match outcome {
        Ok(finished) => {
            say!();
            say!("{}", s.bold("commits on the remote"));
            let log = git_out(
                &remote,
                &["log", "--all", "--graph", "--format=%h %s  (%D)", "--date-order"],
            )?;
            for line in log.lines() {
                say!("  {line}");
            }
            say!();
            say!(
                "{} in {:.1}s. Next: `agentpool up`, then `agentpool run --repo PATH --command CMD` or a prompt.",
                s.green("demo finished"),
                started.elapsed().as_secs_f64()
            );
            if settings.json() {
                let tasks: Vec<serde_json::Value> = finished
                    .iter()
                    .map(|(name, v)| serde_json::json!({ "name": name, "task": v }))
                    .collect();
                super::print_json(&serde_json::json!({
                    "remote": remote,
                    "tasks": tasks,
                    "commits": log.lines().collect::<Vec<_>>(),
                    "seconds": started.elapsed().as_secs_f64(),
                }))?;
            }
            Ok(ExitCode::Success)
        }
        Err(e) => Err(e),
    };
    if args.keep {
        let kept = tmp.keep();
        eprintln!("kept the demo's files in {}", kept.display());
    }
    result
}

struct FoundAgent {
    name: String,
    bin_dir: Option<PathBuf>,
}

/// The first agent CLI found: in `AGENTPOOL_AGENT_BIN_DIR`, in this checkout's pinned
/// `tools/agents` install, or on PATH.
fn find_agent() -> Option<FoundAgent> {
    let mut dirs: Vec<Option<PathBuf>> = Vec::new();
    if let Some(d) = agentpool_agents::cli::dir_from_env("AGENTPOOL_AGENT_BIN_DIR") {
        dirs.push(Some(d));
    }
    let local = PathBuf::from("tools/agents/node_modules/.bin");
    if local.is_dir() {
        dirs.push(std::fs::canonicalize(&local).ok());
    }
    dirs.push(None);
    for dir in dirs {
        let cfg = AgentConfig {
            bin_dir: dir.clone(),
            ..Default::default()
        };
        if cfg.find("claude-code", "claude").is_some() {
            return Some(FoundAgent {
                name: "claude-code".into(),
                bin_dir: dir,
            });
        }
    }
    None
}

async fn tour(
    client: &Client,
    s: &Style,
    remote: &Path,
    root: &Path,
    agent: Option<&FoundAgent>,
) -> anyhow::Result<Vec<(&'static str, TaskDetail)>> {
    let repo = remote.display().to_string();
    let marker = root.join("flaky-fixed");
    let command = |cmd: &str| TaskSpec::command(&repo, cmd);

    // 1. A check that changes nothing: no commit, just a result.
    let check = submit(
        client,
        "check",
        command("test -f README.md && echo 'README.md is present' && ./greet.sh demo"),
    )
    .await?;
    // 2. Generate a file on its own branch.
    let changelog = submit(
        client,
        "changelog",
        TaskSpec {
            branch: Some("demo/changelog".into()),
            commit_message: Some("Add a changelog".into()),
            ..command("printf '# Changelog\\n\\n- first entry\\n' > CHANGELOG.md && echo wrote CHANGELOG.md")
        },
    )
    .await?;
    // 3. Depends on 2 and builds on its branch.
    let release = submit(
        client,
        "release",
        TaskSpec {
            depends_on: vec![changelog.id],
            base_ref: Some("demo/changelog".into()),
            branch: Some("demo/release".into()),
            commit_message: Some("Release 0.1.0".into()),
            ..command("printf '\\n## 0.1.0\\n- released by agentpool demo\\n' >> CHANGELOG.md && echo 0.1.0 > VERSION && cat CHANGELOG.md")
        },
    )
    .await?;
    // 4. Fails until its cause is fixed, with one attempt so it fails for good at once.
    let flaky_cmd = format!(
        "if [ -e {m} ]; then echo fixed > FIXED.txt && echo 'the cause is fixed'; else echo 'upstream service unavailable' >&2; exit 1; fi",
        m = marker.display()
    );
    let flaky = submit(
        client,
        "flaky",
        TaskSpec {
            max_attempts: Some(1),
            branch: Some("demo/flaky".into()),
            commit_message: Some("Record that the upstream service is back".into()),
            ..command(&flaky_cmd)
        },
    )
    .await?;
    let agent_task = match agent {
        Some(a) => Some(
            submit(
                client,
                "agent",
                TaskSpec {
                    agent: Some(a.name.clone()),
                    model: Some("claude-sonnet-4-5".into()),
                    branch: Some("demo/agent".into()),
                    timeout_secs: Some(180),
                    max_attempts: Some(1),
                    ..TaskSpec::agent(&repo, &a.name, "Add a NOTES.md file with a short note.")
                },
            )
            .await?,
        ),
        None => {
            say!(
                "  {}",
                s.dim("(no agent CLI found: install one, e.g. `npm install --prefix tools/agents`, to see a real agent task too)")
            );
            None
        }
    };
    say!();

    let mut finished: Vec<(&'static str, TaskDetail)> = Vec::new();
    for step in [&check, &changelog, &release] {
        let v = show(client, s, step).await?;
        expect_state(&v, TaskState::Succeeded, step.name)?;
        finished.push((step.name, v));
    }

    let v = show(client, s, &flaky).await?;
    expect_state(&v, TaskState::Failed, "flaky")?;
    say!(
        "  {} failed as expected ({}); fixing the cause and retrying it",
        s.bold("flaky"),
        v.task.error_class.map(|c| c.as_str()).unwrap_or("?")
    );
    std::fs::write(&marker, "").context("cannot write the demo's marker file")?;
    let seen = last_seq(client, flaky.id).await?;
    client.retry(flaky.id).await.context("retry refused")?;
    let v = show_after(
        client,
        s,
        &DemoTask {
            name: "flaky (retried)",
            what: flaky.what.clone(),
            id: flaky.id,
        },
        seen,
    )
    .await?;
    expect_state(&v, TaskState::Succeeded, "flaky (retried)")?;
    finished.push(("flaky", v));

    if let Some(a) = &agent_task {
        let v = show(client, s, a).await?;
        expect_state(&v, TaskState::Succeeded, "agent")?;
        finished.push(("agent", v));
    }

    say!("{}", s.bold("results"));
    let rows: Vec<Vec<String>> = finished
        .iter()
        .map(|(name, v)| {
            let r = v.task.result.clone().unwrap_or_default();
            vec![
                name.to_string(),
                s.state(v.task.state),
                format!("{}/{}", v.task.attempts, v.task.max_attempts),
                r.commit_sha
                    .map(|c| c.chars().take(10).collect())
                    .unwrap_or_else(|| "-".into()),
                r.branch.unwrap_or_default(),
                r.files.len().to_string(),
                if r.usage.input_tokens + r.usage.output_tokens > 0 {
                    format!("{}/{}", r.usage.input_tokens, r.usage.output_tokens)
                } else {
                    "-".into()
                },
            ]
        })
        .collect();
    say_raw!(
        "{}",
        output::table(
            s,
            &[
                "TASK",
                "STATE",
                "TRIES",
                "COMMIT",
                "BRANCH",
                "FILES",
                "TOKENS IN/OUT"
            ],
            &rows
        )
    );
    Ok(finished)
}

async fn submit(client: &Client, name: &'static str, spec: TaskSpec) -> anyhow::Result<DemoTask> {
    let task: Task = client
        .submit(&spec)
        .await
        .with_context(|| format!("the demo's {name} task was refused"))?
        .task;
    let s = Style::stdout();
    let what = output::task_what(&task);
    let deps = if spec.depends_on.is_empty() {
        String::new()
    } else {
        s.dim(" (after changelog, from its branch)")
    };
    say!(
        "  {} {} {}{deps}",
        s.dim("submitted"),
        s.bold(&format!("{name:<10}")),
        clip(&what, 70)
    );
    Ok(DemoTask {
        name,
        what,
        id: task.id,
    })
}

/// Wait for a task, then print its events and result.
async fn show(client: &Client, s: &Style, step: &DemoTask) -> anyhow::Result<TaskDetail> {
    show_after(client, s, step, 0).await
}

async fn last_seq(client: &Client, id: TaskId) -> anyhow::Result<i64> {
    let mut after = 0;
    loop {
        let page = client.events(id, after, 500).await?.events;
        match page.last() {
            Some(e) => after = e.seq,
            None => return Ok(after),
        }
    }
}

/// Like [`show`], printing only the events after `seq` (those of a retry).
async fn show_after(client: &Client, s: &Style, step: &DemoTask, seq: i64) -> anyhow::Result<TaskDetail> {
    let mut status = StatusLine::new(!QUIET.load(Ordering::Relaxed));
    let mut lines = Vec::new();
    let view = follow(client, step.id, &mut status, |ev, _| {
        if ev.seq > seq
            && let Some(l) = output::render_event(s, ev)
        {
            lines.push(l);
        }
    })
    .await?;
    drop(status);
    say!(
        "{} {} {}",
        s.bold(&format!("── {}", step.name)),
        s.dim(&clip(&step.what, 60)),
        s.dim("──")
    );
    for l in &lines {
        say!("  {l}");
    }
    for l in output::result_lines(s, view.task.result.as_ref().unwrap_or(&Default::default())).lines() {
        say!("  {l}");
    }
    say!();
    Ok(view)
}

fn expect_state(v: &TaskDetail, want: TaskState, name: &str) -> anyhow::Result<()> {
    if v.task.state == want {
        return Ok(());
    }
    Err(Exit::new(
        ExitCode::Failed,
        format!(
            "demo task {name} ended {} (expected {want}){}",
            v.task.state,
            v.task
                .error_message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ),
    )
    .into())
}

/// A small project (a script and a README) committed on `main` and cloned into a bare
/// repository that plays the remote. Returns the remote's path.
fn sample_repo(root: &Path) -> anyhow::Result<PathBuf> {
    let work = root.join("sample");
    let remote = root.join("remote.git");
    std::fs::create_dir_all(&work)?;
    git(&work, &["init", "-q", "-b", "main"])?;
    std::fs::write(
        work.join("README.md"),
        "# sample\n\nA tiny project that agentpool's demo works on.\n",
    )?;
    let script = work.join("greet.sh");
    std::fs::write(&script, "#!/bin/sh\necho \"hello, ${1:-world}\"\n")?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    }
    git(&work, &["add", "-A"])?;
    git(&work, &["commit", "-q", "-m", "Initial commit"])?;
    git(
        root,
        &[
            "clone",
            "-q",
            "--bare",
            &work.display().to_string(),
            &remote.display().to_string(),
        ],
    )?;
    Ok(remote)
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    git_out(dir, args).map(|_| ())
}

fn git_out(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "agentpool demo")
        .env("GIT_AUTHOR_EMAIL", "demo@agentpool.invalid")
        .env("GIT_COMMITTER_NAME", "agentpool demo")
        .env("GIT_COMMITTER_EMAIL", "demo@agentpool.invalid")
        .output()
        .context("cannot run git: is it installed?")?;
    if !out.status.success() {
        anyhow::bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
