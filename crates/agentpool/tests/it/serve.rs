//! Server + workers mode: `tokens` on the database, `serve` with auth, a separate `worker`
//! process over HTTP, and clients with tokens.

use std::process::Stdio;

use crate::{Env, SpawnReaped, Up, git, json, stderr, stdout, submit_args, terminate};

/// The production layout, all through the binary: migrate, tokens on the database, `serve`
/// with auth, a separate `worker` process over HTTP, a client with a submitter token.
fn server_and_worker_run_a_task_with_tokens(env: &Env, db: &str) {
    let remote = env.sample_repo();
    let migrate = || {
        let mut c = env.cmd();
        c.env("AGENTPOOL_LOG", "info")
            .args(["migrate", "--database-url", db]);
        c.output().unwrap()
    };
    let o = migrate();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stdout(&o).contains("s3cret"));
    // It says what it applied, and the second time that there was nothing to apply.
    let applied = stderr(&o);
    assert!(
        applied.contains("database schema created version=") && !applied.contains("migration applied"),
        "{applied}"
    );
    assert!(
        stdout(&o).contains(": schema created at version "),
        "{}",
        stdout(&o)
    );
    let again = migrate();
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(
        !stderr(&again).contains("migration applied") && !stderr(&again).contains("schema created"),
        "{}",
        stderr(&again)
    );
    assert!(
        stdout(&again).contains(" is up to date (schema version "),
        "{}",
        stdout(&again)
    );
    let submitter = env.create_token(db, "ci", "submitter");
    let worker_token = env.create_token(db, "pool", "worker");
    let listed = env
        .cmd()
        .env("AGENTPOOL_DATABASE_URL", db)
        .args(["tokens", "list", "--output", "json"])
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
    assert!(
        !listed.to_string().contains(&submitter),
        "token values are never listed"
    );

    let mut serve = env.cmd();
    serve.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--allow-local-repos",
        "--database-url",
        db,
    ]);
    serve.env("AGENTPOOL_LOG", "info");
    let (server, server_log) = Up::spawn_watching_stderr(serve);

    let mut worker = env
        .cmd()
        .args(["worker", "--server", &server.url, "--token", &worker_token])
        .env("AGENTPOOL_LOG", "info")
        .env("AGENTPOOL_COMMIT_AUTHOR", "Pool Bot <bot@agentpool.test>")
        .args([
            "--concurrency",
            "2",
            "--allow-local-repos",
            "--labels",
            "zone=test",
            "--max-log-mib",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn_reaped();

    // The CLI as the submitter token `ci`.
    let as_ci = |args: &[&str]| {
        let mut all = vec!["--server", server.url.as_str(), "--token", submitter.as_str()];
        all.extend_from_slice(args);
        env.run(&all)
    };
    let o = as_ci(&[
        "submit",
        "--repo",
        remote.to_str().unwrap(),
        "--command",
        "echo via-http > http.txt",
        "--label",
        "zone=test",
        "--branch",
        "over-http",
        "--wait",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(git(&remote, &["show", "over-http:http.txt"]), "via-http");
    assert_eq!(
        git(
            &remote,
            &["log", "-1", "--format=%an <%ae> %cn <%ce>", "over-http"]
        ),
        "Pool Bot <bot@agentpool.test> Pool Bot <bot@agentpool.test>"
    );

    // The worker records 1 MiB of a chatty command's output, then its last lines.
    let chatty = [
        "--command",
        "seq 1 200000",
        "--label",
        "zone=test",
        "--wait",
        "-o",
        "json",
    ];
    let o = as_ci(&[&["submit", "--repo", remote.to_str().unwrap()][..], &chatty].concat());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let id = json(&o)["id"].as_str().expect("the task's id").to_string();
    let o = as_ci(&["tasks", "logs", &id]);
    let log = stdout(&o);
    assert!(
        log.contains("the output passed this attempt's log limit (1 MiB)"),
        "{}",
        &log[..log.len().min(2000)]
    );
    assert!(log.contains(" were not recorded; the last "), "the summary line");
    assert!(log.lines().count() < 20_000, "{} lines", log.lines().count());
    let last_output = log.lines().filter(|l| l.trim_end().ends_with("200000")).count();
    assert_eq!(last_output, 1, "the last line of the output is kept");

    // The server's log names who changed what: here, who canceled a task.
    let mut args = vec!["--token", submitter.as_str()];
    args.extend(submit_args(
        &server.url,
        remote.to_str().unwrap(),
        "true",
        &["--label", "zone=nowhere"],
    ));
    let o = env.run(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let queued = stdout(&o).trim().to_string();
    // A reason the server refuses is said in one line, and the task is left as it was.
    let o = as_ci(&["tasks", "cancel", &queued, "--reason", "two\nlines"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        stderr(&o).trim(),
        "agentpool: invalid field reason: must be 1-500 characters, no control characters"
    );
    let o = as_ci(&["tasks", "cancel", &queued, "--reason", "superseded by #42"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let line = server_log
        .iter()
        .find(|l| l.contains("task canceled"))
        .expect("the server logs the cancel");
    assert!(
        line.contains(&queued) && line.contains("ci (submitter)") && line.contains("superseded by #42"),
        "{line}"
    );
    let t = json(&as_ci(&["--output", "json", "tasks", "show", &queued]));
    assert_eq!(
        t["error_message"], "canceled by ci (submitter): superseded by #42",
        "{t}"
    );

    // A failed attempt that the server retries: the worker's log says so (checked below).
    let mut args = vec!["--token", submitter.as_str()];
    args.extend(submit_args(
        &server.url,
        remote.to_str().unwrap(),
        "echo broken >&2; exit 3",
        &["--label", "zone=test", "--max-attempts", "2"],
    ));
    let o = env.run(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let flaky = stdout(&o).trim().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let t = json(&as_ci(&["--output", "json", "tasks", "show", &flaky]));
        if t["attempts"] == 1 && t["state"] == "queued" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{t}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let o = as_ci(&["tasks", "cancel", &flaky]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // Without a token the server refuses: one line, exit code 4.
    let o = env.run(&["--server", &server.url, "tasks", "list"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));

    // SIGTERM drains the worker, which then exits cleanly.
    terminate(&worker);
    let status = worker.wait().unwrap();
    assert!(status.success(), "worker exited with {status}");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut worker.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("2 succeeded"), "{err}");
    // Its log says what became of the task, not only that it ran.
    let sha = git(&remote, &["rev-parse", "over-http"]);
    let end = err
        .lines()
        .find(|l| l.contains("task succeeded"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(end.contains(&format!("commit={}", &sha[..12])), "{end}");
    assert!(end.contains("pushed=true"), "{end}");
    let retried = err
        .lines()
        .find(|l| l.contains("attempt failed; the task is retried"))
        .unwrap_or_else(|| panic!("{err}"));
    for part in [
        flaky.as_str(),
        "attempt=1",
        "class=AGENT_ERROR",
        "next_attempt=2",
        "the command exited with code 3",
    ] {
        assert!(retried.contains(part), "{part}: {retried}");
    }
    assert!(server.stop().success());
}

#[test]
fn serve_and_a_separate_worker_on_sqlite() {
    Env::new().on_sqlite(server_and_worker_run_a_task_with_tokens);
}

#[test]
fn serve_and_a_separate_worker_on_postgresql() {
    Env::new().on_postgres(server_and_worker_run_a_task_with_tokens);
}

#[test]
fn serve_refuses_local_repositories_unless_enabled() {
    let env = Env::new();
    let remote = env.sample_repo();
    let db = format!("sqlite://{}?mode=rwc", env.dir.path().join("prod.db").display());
    let mut serve = env.cmd();
    serve.args(["serve", "--listen", "127.0.0.1:0", "--database-url", &db]);
    let server = Up::spawn(serve);
    // `args` as a client of the server with a new token of `role`: refused in one line, exit 2.
    let refused = |role: &str, args: &[&str]| {
        let token = env.create_token(&db, role, role);
        let mut all = vec!["--server", server.url.as_str(), "--token", token.as_str()];
        all.extend_from_slice(args);
        let o = env.run(&all);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        stderr(&o)
    };
    let repo = remote.to_str().unwrap();
    let err = refused("submitter", &["submit", "--repo", repo, "--command", "true"]);
    assert_eq!(
        err.trim(),
        "agentpool: submit refused: --repo: local repositories (file:// or a path) are not enabled \
         on this server (agentpool serve --allow-local-repos)"
    );
    // A project on one is refused the same way, by the flag of `projects put`.
    let err = refused(
        "admin",
        &["projects", "put", "web", "--repo", repo, "--slots", "0"],
    );
    assert!(
        err.starts_with("agentpool: project refused: --repo: local repositories"),
        "{err}"
    );
    assert!(err.contains("; --slots: "), "{err}");
    drop(server);
}

/// A task on a local repository starts from the branch checked out there when it is submitted,
/// even after a separate worker has mirrored that repository while another branch was.
#[test]
fn a_local_repository_s_task_starts_from_the_branch_checked_out_there() {
    let env = Env::new();
    env.sample_repo();
    let work = env.dir.path().join("src-repo");
    let repo = work.to_str().unwrap();
    let server = Up::spawn(env.serve_cmd());
    let worker = env
        .cmd()
        .args(["worker", "--server", &server.url, "--allow-local-repos"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn_reaped();
    let submit = |command: &str| {
        let o = env.run(&submit_args(
            &server.url,
            repo,
            command,
            &["--wait", "--no-push", "-o", "json"],
        ));
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        json(&o)["id"].as_str().unwrap().to_string()
    };
    // On main: the worker now keeps a mirror of the repository.
    submit("true");
    git(&work, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(work.join("feature.txt"), "on feature\n").unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "on feature"]);
    let id = submit("git log -1 --format=subject:%s");
    let logs = stdout(&env.run(&["--server", &server.url, "tasks", "logs", &id]));
    assert!(logs.contains("subject:on feature"), "{logs}");
    terminate(&worker);
}
