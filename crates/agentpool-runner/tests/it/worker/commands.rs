//! Command tasks end to end: commits pushed and recorded, failures classified, hostile
//! repositories and refs refused, credentials kept out of the command and the logs.

use super::*;
use agentpool_core::spec::LOCAL_REPOS_LABEL;
use agentpool_runner::log_limit::LogLimit;

#[tokio::test]
async fn command_task_commits_to_the_work_branch_in_the_remote_and_records_it() {
    let env = env().await;
    let task = env
        .store
        .enqueue(command(
            &env,
            "printf 'more\\n' >> README.md && echo new > added.txt && echo edited",
        ))
        .await
        .unwrap()
        .task;
    let w = start_w1(&env).await;
    let done = finished(&env.store, task.id).await;
    let summary = w.stop().await;

    let result = succeeded_result(&done);
    let branch = format!("agentpool/{}", task.id);
    assert_eq!(result.branch.as_deref(), Some(branch.as_str()));
    let sha = result.commit_sha.clone().unwrap();
    assert_eq!(env.server.branch_sha("app", &branch), Some(sha.clone()));
    assert_eq!(
        env.server.read_file("app", &sha, "README.md").as_deref(),
        Some("hello\nmore\n")
    );
    let mut files: Vec<_> = result
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.added, f.removed))
        .collect();
    files.sort();
    assert_eq!(
        files,
        vec![("README.md", Some(1), Some(0)), ("added.txt", Some(1), Some(0))]
    );
    assert!(result.pushed);
    let (author, message) = env.server.commit_info("app", &sha).unwrap();
    assert_eq!(author, "Pool Bot <pool@agentpool.test>");
    // No message given: the command is the subject, the task id a trailer.
    assert_eq!(
        message,
        format!(
            "printf 'more\\n' >> README.md && echo new > added.txt && echo edited\n\nAgentpool-Task: {}",
            task.id
        )
    );
    // main is untouched.
    assert_ne!(env.server.branch_sha("app", "main"), Some(sha));
    assert!(log_lines(&events(&env.store, task.id).await).contains(&"edited".to_string()));
    assert_eq!(summary.succeeded, 1);
    assert_eq!(
        env.store
            .get_worker(&WorkerId::parse("w1").unwrap())
            .await
            .unwrap()
            .map(|w| w.status)
            .unwrap_or(agentpool_core::WorkerStatus::Offline),
        agentpool_core::WorkerStatus::Offline
    );
}

#[tokio::test]
async fn failing_command_is_an_agent_error_with_its_exit_code() {
    let env = env().await;
    let mut spec = command(&env, "echo boom >&2; echo out; echo >&2; exit 7");
    spec.max_attempts = Some(1);
    let done = run_to_done(&env, spec).await;
    assert_eq!(done.task.state, TaskState::Failed);
    assert_eq!(done.task.error_class, Some(ErrorClass::AgentError));
    assert_eq!(done.task.result.as_ref().and_then(|r| r.exit_code), Some(7));
    assert!(log_lines(&events(&env.store, done.task.id).await).contains(&"boom".to_string()));
    // The message quotes the last line the command wrote to stderr.
    assert_eq!(
        done.task.error_message.as_deref(),
        Some("the command exited with code 7: boom")
    );

    let mut spec = command(&env, "no-such-tool --version");
    spec.max_attempts = Some(1);
    let done = run_to_done(&env, spec).await;
    let message = done.task.error_message.unwrap_or_default();
    assert!(
        message.starts_with("the command exited with code 127: ") && message.contains("no-such-tool"),
        "{message}"
    );
}

/// A command printing 200,000 lines past a small log limit: the first lines are recorded as
/// they come, then a notice, and when the command's step ends how many were left out and the
/// last ones — a bounded number of events, with the end of the output kept in its place.
#[tokio::test]
async fn output_past_the_log_limit_keeps_its_head_and_its_tail() {
    let env = env().await;
    let task = enqueue_command(&env, "seq 1 200000").await;
    let mut cfg = config(&env, "w1", TOKEN);
    cfg.pipeline.log_limit = LogLimit {
        head_bytes: 64 << 10,
        tail_bytes: 4 << 10,
    };
    let w = start(cfg, api(&env.store, Duration::from_secs(30)).await);
    let done = finished(&env.store, task.id).await;
    w.stop().await;
    assert_succeeded(&done);
    let all = events(&env.store, task.id).await;
    assert!(all.len() < 2_000, "{} events", all.len());
    let lines = log_lines(&all);
    let numbers: Vec<u32> = lines.iter().filter_map(|l| l.parse().ok()).collect();
    // Each line costs its text and 64 bytes: the head holds about a thousand, the tail about 60.
    let head = numbers.iter().take_while(|n| **n < 100_000).count();
    assert_eq!(numbers[..head], (1..=head as u32).collect::<Vec<_>>()[..]);
    assert!((900..1000).contains(&head), "{head} lines in the head");
    let tail = &numbers[head..];
    assert_eq!(tail.last(), Some(&200_000));
    assert_eq!(tail, (200_001 - tail.len() as u32..=200_000).collect::<Vec<_>>());
    let notice = lines
        .iter()
        .position(|l| l.starts_with("the output passed this attempt's log limit (64 KiB)"))
        .expect("the notice");
    let left_out = format!("{} lines of output (", 200_000 - head - tail.len());
    let summary = lines
        .iter()
        .position(|l| {
            l.starts_with(&left_out) && l.ends_with(&format!("the last {} lines follow", tail.len()))
        })
        .unwrap_or_else(|| {
            panic!(
                "no summary line starting {left_out:?}, {} lines in the tail, in {:?}",
                tail.len(),
                &lines[head..head + 3]
            )
        });
    assert!(notice < summary);
    assert_eq!(
        lines[summary + 1],
        tail[0].to_string(),
        "the tail follows the summary"
    );
    // The command's last lines stay with the command: before the pipeline's next step.
    let next_step = lines
        .iter()
        .position(|l| l == "no changes to commit")
        .expect("the pipeline's line after the command");
    assert_eq!(next_step, summary + 1 + tail.len(), "{:?}", &lines[summary..]);
}

#[tokio::test]
async fn a_local_repository_on_a_worker_that_does_not_read_them_is_an_invalid_task() {
    let env = env().await;
    // The task waits for a worker carrying the label of those that read local repositories;
    // this one carries it by hand (its operator's mistake) without the setting, so it claims
    // the task and must refuse it.
    let mut spec = TaskSpec::command("/tmp/some/repo", "true");
    spec.max_attempts = Some(3);
    let enq = env.store.enqueue(spec).await.unwrap();
    let mut config = config(&env, "w1", TOKEN);
    config.labels.insert(LOCAL_REPOS_LABEL.into(), "true".into());
    let w = start(config, api(&env.store, Duration::from_secs(30)).await);
    let done = finished(&env.store, enq.task.id).await;
    w.stop().await;
    assert_eq!(done.task.error_class, Some(ErrorClass::InvalidTask));
    assert_eq!(done.task.attempts, 1, "invalid tasks are not retried");
    // The server accepted it; the message names the worker's setting that refused it.
    assert_eq!(
        done.task.error_message.as_deref(),
        Some(
            "repo: local repositories (file:// or a path) are not enabled on this worker \
             (agentpool worker --allow-local-repos)"
        )
    );
}

/// A git credential is not sent in clear text: a task on a plain http:// repository of another
/// machine fails before git runs, unless the worker is started to allow it. (The test's git
/// server is on loopback, where plain http is allowed; 0.0.0.0 is another address for it.)
#[tokio::test]
async fn a_git_credential_is_not_sent_over_plain_http_to_another_machine() {
    let env = env().await;
    let run = async |allow: bool| {
        let mut spec = TaskSpec::command("http://0.0.0.0:9/app.git", "true");
        spec.max_attempts = Some(1);
        let enq = env.store.enqueue(spec).await.unwrap();
        let mut config = config(&env, "w1", TOKEN);
        config.pipeline.allow_http_credentials = allow;
        let w = start(config, api(&env.store, Duration::from_secs(30)).await);
        let done = finished(&env.store, enq.task.id).await;
        w.stop().await;
        done.task
    };
    let refused = run(false).await;
    assert_eq!(refused.error_class, Some(ErrorClass::InvalidTask));
    assert_eq!(
        refused.error_message.as_deref(),
        Some(
            "repo: refusing to send the git credential to 0.0.0.0 over plain http://, in clear \
             text: use an https:// URL (or start the worker with --allow-http-credentials)"
        )
    );
    // Allowed, git itself runs, and fails to reach the address.
    let tried = run(true).await;
    assert_ne!(tried.error_class, Some(ErrorClass::InvalidTask), "{tried:?}");
    assert!(
        !tried.error_message.unwrap_or_default().contains("refusing"),
        "the worker's setting allowed it"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn wrong_token_fails_with_git_auth_not_retried_and_the_token_is_never_shown() {
    let (logs, _guard) = LogCapture::start();

    let env = env().await;
    let wrong = "wrong-token-7e1d44aa90";
    let mut spec = command(&env, "echo should-not-run");
    spec.max_attempts = Some(3);
    let task = env.store.enqueue(spec).await.unwrap().task;
    let w = start(
        config(&env, "w1", wrong),
        api(&env.store, Duration::from_secs(30)).await,
    );
    let done = finished(&env.store, task.id).await;
    let summary = w.stop().await;

    assert_eq!(done.task.state, TaskState::Failed);
    assert_eq!(done.task.error_class, Some(ErrorClass::GitAuthFailed));
    assert_eq!(done.task.attempts, 1, "an auth failure is not retried");
    assert_eq!(done.attempts_detail.len(), 1);
    assert_eq!(summary.failed, 1);

    let all_events = serde_json::to_string(&events(&env.store, task.id).await).unwrap();
    let detail = serde_json::to_string(&done).unwrap();
    let log_text = logs.text();
    assert!(
        !log_text.is_empty(),
        "the worker logged nothing, so the scan proves nothing"
    );
    for (what, text) in [("events", &all_events), ("task", &detail), ("logs", &log_text)] {
        for secret in [wrong, TOKEN] {
            assert!(!text.contains(secret), "{what} contain the token: {text}");
        }
    }
    assert!(!all_events.contains("should-not-run"));
}

#[tokio::test]
async fn the_command_gets_a_cleared_environment_without_git_credentials() {
    let env = env().await;
    // SAFETY: set before any worker starts; the variable must not leak into the task.
    unsafe { std::env::set_var("AGENTPOOL_TEST_LEAK", "leaked-value") };
    let token_dir = env.dir.path().join("w1/state/credentials");
    // The command holds still until the test has looked for the token file under the worker's
    // private credential directories (the test runs with the worker's rights; the task cannot
    // list them).
    let (running, go) = (env.dir.path().join("running"), env.dir.path().join("go"));
    let cmd = format!(
        "env | sort; cat \"$HOME/.gitconfig\" 2>/dev/null; echo x > pushed.txt; \
         touch '{}'; while [ ! -e '{}' ]; do sleep 0.02; done",
        running.display(),
        go.display()
    );
    let task = enqueue_command(&env, &cmd).await;
    let w = start_w1(&env).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !running.exists() {
        assert!(std::time::Instant::now() < deadline, "the command never started");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (dirs, token_files) = files_named(&token_dir, "git-token");
    assert!(
        dirs > 1,
        "no private credential directory for the running task under {token_dir:?}"
    );
    std::fs::write(&go, "").expect("release the command");
    let done = finished(&env.store, task.id).await;
    w.stop().await;
    assert_eq!(done.task.state, TaskState::Succeeded);
    assert!(
        token_files.is_empty(),
        "the git token file exists while the task's command runs: {token_files:?}"
    );
    let lines = log_lines(&events(&env.store, task.id).await);
    let vars: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    assert!(
        vars.contains(&"AGENTPOOL_TASK_ID") && vars.contains(&"HOME"),
        "{vars:?}"
    );
    let text = lines.join("\n");
    assert!(!text.contains(TOKEN));
    assert!(!text.contains("leaked-value"));
    assert!(!text.contains("GIT_ASKPASS") && !text.contains("AGENTPOOL_GIT_TOKEN_FILE"));
    // The token came back for the push after the command.
    assert!(done.task.result.as_ref().is_some_and(|r| r.pushed));
}

#[tokio::test]
async fn hostile_repository_urls_and_refs_fail_as_invalid_tasks_without_running() {
    let env = env().await;
    let marker = env.dir.path().join("pwned");
    let m = marker.display().to_string();
    let url = env.server.url("app");
    let mut specs = vec![
        TaskSpec::command(&format!("ext::sh -c touch% {m}"), "true"),
        TaskSpec::command(&format!("--upload-pack=touch {m}"), "true"),
        TaskSpec::command("file:///etc", "true"),
    ];
    let mut bad_ref = TaskSpec::command(&url, "true");
    bad_ref.base_ref = Some(format!("--upload-pack=touch {m}"));
    specs.push(bad_ref);
    let mut bad_branch = TaskSpec::command(&url, "true");
    bad_branch.branch = Some("-f".into());
    specs.push(bad_branch);
    let mut ids = Vec::new();
    for s in specs {
        ids.push(env.store.enqueue(s).await.unwrap().task.id);
    }
    // The label of workers that read local repositories, given by hand without the setting,
    // so that this worker claims the `file://` task too and refuses it itself.
    let mut config = config(&env, "w1", TOKEN);
    config.labels.insert(LOCAL_REPOS_LABEL.into(), "true".into());
    let w = start(config, api(&env.store, Duration::from_secs(30)).await);
    for id in ids {
        let done = finished(&env.store, id).await;
        assert_eq!(
            done.task.error_class,
            Some(ErrorClass::InvalidTask),
            "{:?}",
            done.task.spec
        );
        assert_eq!(done.task.attempts, 1);
    }
    w.stop().await;
    assert!(!marker.exists(), "a hostile value was executed");
    assert_eq!(env.server.branches("app"), vec!["main".to_string()]);
}

/// The directories walked below `dir` (itself included) and every file called `name` in them.
/// A non-listable directory is opened up for the look and closed again: the test has the
/// worker's rights, and a look that silently saw nothing would prove nothing.
fn files_named(dir: &std::path::Path, name: &str) -> (usize, Vec<std::path::PathBuf>) {
    use std::os::unix::fs::PermissionsExt;
    let mut found = Vec::new();
    let mut walked = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let mode = std::fs::metadata(&d).expect("stat").permissions().mode();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).expect("open up");
        let entries: Vec<_> = std::fs::read_dir(&d).expect("list").flatten().collect();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).expect("close again");
        walked += 1;
        for e in entries {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if e.file_name() == name {
                found.push(p);
            }
        }
    }
    (walked, found)
}

/// A task naming a repository the git server does not have fails at once as `INVALID_TASK`:
/// no later attempt would find it, so none is spent waiting out backoffs.
#[tokio::test]
async fn a_repository_that_is_not_there_fails_as_invalid_without_retries() {
    let env = env().await;
    let mut spec = TaskSpec::command(&env.server.url("no-such-repo"), "echo should-not-run");
    spec.max_attempts = Some(3);
    let task = env.store.enqueue(spec).await.unwrap().task;
    let w = start_w1(&env).await;
    let done = finished(&env.store, task.id).await;
    w.stop().await;
    assert_eq!(done.task.state, TaskState::Failed);
    assert_eq!(done.task.error_class, Some(ErrorClass::InvalidTask), "{done:#?}");
    assert_eq!(done.task.attempts, 1, "not retried");
    let message = done.task.error_message.unwrap_or_default();
    assert!(message.contains("the repository was not found"), "{message}");
}
