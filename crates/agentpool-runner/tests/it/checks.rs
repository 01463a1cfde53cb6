//! Checks after the run and feedback rounds (docs/checks.md), through the real worker pipeline:
//! a real server and SQLite store, the smart-HTTP git server, real processes, and the real
//! Claude Code CLI against the scripted model endpoint.

use std::time::Duration;

use agentpool_core::{CheckRun, CheckSpec, ErrorClass, Event, EventKind, Lifecycle, TaskSpec, TaskState};
use agentpool_store::TaskDetail;
use agentpool_testkit::model::{INPUT_TOKENS, Step};

use super::agents::{agent_env, agent_task, finished_within, run_to_end};
use super::worker::{
    Env, GRANDCHILDREN, TOKEN, api, assert_all_gone, command, config, env, events, pids, run_to_done, start,
    succeeded_result, wait_log,
};

/// Passes only once `answer.txt` holds 42; says which test failed, as cargo would.
const ANSWER_CHECK: &str = "got=$(cat answer.txt 2>/dev/null); \
    if [ \"$got\" = 42 ]; then echo 'test answer ... ok'; \
    else echo 'test answer_is_42 ... FAILED'; echo \"expected 42 in answer.txt, found '$got'\"; exit 1; fi";

fn check(name: &str, command: &str) -> CheckSpec {
    CheckSpec {
        name: Some(name.into()),
        ..CheckSpec::command(command)
    }
}

/// Command `cmd` on repository `app`, checked by `checks` after it ran.
fn checked(env: &Env, cmd: &str, checks: Vec<CheckSpec>) -> TaskSpec {
    let mut spec = command(env, cmd);
    spec.checks = Some(checks);
    spec
}

/// A command task that does nothing, with one `check` that must fail: the finished task, once
/// it failed as `CHECKS_FAILED`.
async fn failed_check(env: &Env, check: CheckSpec) -> TaskDetail {
    let done = run_to_done(env, checked(env, "true", vec![check])).await;
    assert_eq!(done.task.error_class, Some(ErrorClass::ChecksFailed));
    done
}

/// The two sleepers `GRANDCHILDREN` started (their pids are in `lines`) are gone.
fn grandchildren_gone(lines: &[String], after: &str) {
    let ps = pids(lines);
    assert_eq!(ps.len(), 2);
    assert_all_gone(&ps, after);
}

/// A Claude Code task asked to put the answer in answer.txt, checked by `ANSWER_CHECK` for up
/// to `max_rounds` rounds.
fn answer_task(env: &Env, max_rounds: u32) -> TaskSpec {
    let mut spec = agent_task(env, "claude-code", "Put the answer in answer.txt");
    spec.checks = Some(vec![check("answer", ANSWER_CHECK)]);
    spec.max_rounds = Some(max_rounds);
    spec
}

fn lifecycle(evs: &[Event]) -> Vec<Lifecycle> {
    evs.iter()
        .filter_map(|e| e.payload.lifecycle().cloned())
        .collect()
}

fn check_events(evs: &[Event]) -> Vec<CheckRun> {
    lifecycle(evs)
        .into_iter()
        .filter_map(|l| match l {
            Lifecycle::CheckFinished(r) => Some(r),
            _ => None,
        })
        .collect()
}

/// The scripted model writes the wrong answer, gets the failing check's output on resume,
/// writes the right one: the task succeeds in round 2 with both rounds in its result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_fixes_a_failing_check_in_the_resumed_session() {
    let Some((env, model)) = agent_env(
        "claude-code",
        [
            Step::write_file("answer.txt", "41"),
            Step::answer("Wrote the answer."),
            Step::write_file("answer.txt", "42"),
            Step::answer("Fixed the answer."),
        ],
    )
    .await
    else {
        return;
    };
    let spec = answer_task(&env, 3);
    let done = run_to_end(&env, "claude-code", &model, spec, Duration::from_secs(240)).await;
    let evs = events(&env.store, done.task.id).await;
    let why = format!("{:?}\n{:#?}", done.task.error_message, lifecycle(&evs));
    assert_eq!(done.task.state, TaskState::Succeeded, "{why}");
    let result = done.task.result.clone().expect("a result");
    assert_eq!(result.rounds, Some(2), "{why}");
    assert_eq!(result.checks_passed, Some(true));
    let rounds: Vec<_> = result.checks.iter().map(|c| (c.round, c.passed)).collect();
    assert_eq!(rounds, [(1, false), (2, true)], "{why}");
    assert_eq!(result.checks[0].exit_code, Some(1));
    assert_eq!(result.checks[0].failed_tests, ["answer_is_42"]);
    assert!(result.checks[0].output_tail.contains("found '41'"));
    assert_eq!(
        check_events(&evs),
        result.checks,
        "the events carry the same runs"
    );
    assert!(
        lifecycle(&evs).contains(&Lifecycle::FeedbackRound {
            round: 2,
            failing: vec!["answer".into()],
            resumed: true,
        }),
        "{why}"
    );
    // The resumed conversation's first request carries the check's output.
    let requests = model.agent_requests();
    let round2 = requests
        .iter()
        .find(|r| r.step == Some(2))
        .expect("a request in round 2");
    let body = round2.body.to_string();
    assert!(body.contains("expected 42 in answer.txt, found '41'"), "{body}");
    assert!(body.contains("answer_is_42"), "{body}");
    assert!(
        body.contains("Put the answer in answer.txt"),
        "the session was resumed"
    );
    // Tokens and cost add up across both rounds (each round made two agent requests).
    assert!(
        result.usage.input_tokens >= 4 * INPUT_TOKENS,
        "{:?}",
        result.usage
    );
    // Claude Code reports a resumed session's running total; each round cost the same here,
    // so the task cost twice what the first round reported.
    let first = evs
        .iter()
        .find(|e| e.kind() == EventKind::Usage)
        .and_then(|e| e.data()["cost_usd"].as_f64())
        .expect("the first round's cost");
    let cost = result.cost_usd.expect("a cost");
    assert!((cost - 2.0 * first).abs() < 1e-9, "{cost} vs {first}");
    let sha = result.commit_sha.clone().expect("a commit");
    assert_eq!(
        env.server.read_file("app", &sha, "answer.txt").as_deref(),
        Some("42")
    );
}

/// Checks that never pass end the task CHECKS_FAILED after `max_rounds`, without a retry; the
/// work branch is pushed when the task asks, marked failing in the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_checks_that_never_pass_fail_after_max_rounds_and_push_when_asked() {
    let Some((env, model)) = agent_env(
        "claude-code",
        [
            Step::write_file("answer.txt", "41"),
            Step::answer("Wrote the answer."),
        ],
    )
    .await
    else {
        return;
    };
    let mut spec = answer_task(&env, 2);
    spec.max_attempts = Some(3);
    spec.push_on_checks_failed = true;
    let done = run_to_end(&env, "claude-code", &model, spec, Duration::from_secs(240)).await;
    let why = format!("{:?}", done.task.error_message);
    assert_eq!(done.task.state, TaskState::Failed, "{why}");
    assert_eq!(done.task.error_class, Some(ErrorClass::ChecksFailed), "{why}");
    assert_eq!(done.task.attempts, 1, "CHECKS_FAILED is not retried");
    assert_eq!(
        done.task.error_message.as_deref(),
        Some("checks failed after 2 rounds: answer")
    );
    let result = done.task.result.clone().expect("a result");
    assert_eq!(result.rounds, Some(2));
    assert_eq!(result.checks_passed, Some(false));
    assert_eq!(result.checks.len(), 2);
    assert!(result.pushed, "pushed although failing");
    let branch = result.branch.clone().unwrap();
    let sha = env
        .server
        .branch_sha("app", &branch)
        .expect("the branch reached the remote");
    assert_eq!(result.commit_sha.as_deref(), Some(sha.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_task_with_passing_checks_commits_and_records_them() {
    let env = env().await;
    let spec = checked(
        &env,
        "echo 42 > answer.txt",
        vec![
            check("answer", "grep -qx 42 answer.txt"),
            CheckSpec::command("test -f README.md"),
        ],
    );
    let done = run_to_done(&env, spec).await;
    let r = succeeded_result(&done);
    assert_eq!((r.rounds, r.checks_passed), (Some(1), Some(true)));
    let names: Vec<_> = r.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["answer", "test -f README.md"]);
    assert!(r.checks.iter().all(|c| c.passed && c.exit_code == Some(0)));
    assert!(r.commit_sha.is_some() && r.pushed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_task_with_a_failing_check_fails_without_retry_or_push() {
    let env = env().await;
    let mut spec = checked(&env, "echo 41 > answer.txt", vec![check("answer", ANSWER_CHECK)]);
    spec.max_attempts = Some(3);
    let done = run_to_done(&env, spec).await;
    assert_eq!(done.task.state, TaskState::Failed);
    failed_with_nothing_pushed(&env, &done, "checks failed: answer");
    assert_eq!(done.task.attempts, 1);
}

/// The task failed `CHECKS_FAILED` saying `message`, its checks did not pass, and it committed
/// and pushed nothing.
fn failed_with_nothing_pushed(env: &Env, done: &TaskDetail, message: &str) {
    assert_eq!(done.task.error_class, Some(ErrorClass::ChecksFailed));
    assert_eq!(done.task.error_message.as_deref(), Some(message));
    let r = done.task.result.clone().expect("a result");
    assert_eq!(r.checks_passed, Some(false));
    assert!(!r.pushed && r.commit_sha.is_none());
    let branch = format!("agentpool/{}", done.task.id);
    assert_eq!(env.server.branch_sha("app", &branch), None, "nothing pushed");
}

/// A check that passes but changes the work (a formatter) runs again on what it changed: the
/// commit is the formatted tree, every check passed on it, and the events say why the checks
/// ran twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_that_change_the_work_run_again_on_it_and_what_they_passed_is_committed() {
    let env = env().await;
    let spec = checked(
        &env,
        "printf 'x = 1   \\n' > code.txt",
        vec![
            check("format", "sed -i 's/ *$//' code.txt"),
            check("no trailing spaces", "! grep -q ' $' code.txt"),
        ],
    );
    let done = run_to_done(&env, spec).await;
    let r = succeeded_result(&done);
    assert_eq!((r.rounds, r.checks_passed), (Some(1), Some(true)));
    assert_eq!(r.checks.len(), 4, "two passes of both checks: {:#?}", r.checks);
    let evs = events(&env.store, done.task.id).await;
    assert!(
        lifecycle(&evs).contains(&Lifecycle::ChecksChangedFiles {
            round: 1,
            files: vec!["code.txt".into()],
        }),
        "{:#?}",
        lifecycle(&evs)
    );
    let sha = r.commit_sha.expect("a commit");
    let content = agentpool_testkit::git::git(
        &env.server.repo_path("app"),
        &["show", &format!("{sha}:code.txt")],
    );
    assert_eq!(content, "x = 1", "the formatted line, its trailing spaces gone");
}

/// A check that changes the work it passed on is not the last word: run again, the checks see
/// the changed tree, and a check that fails on it fails the task with nothing pushed. A check
/// that changes the work every time fails it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_whose_changes_do_not_pass_them_fail_the_task() {
    let env = env().await;
    let spec = checked(
        &env,
        "echo good > a.txt",
        vec![
            check("good", "grep -q good a.txt"),
            check("breaks it", "echo broken > a.txt"),
        ],
    );
    let done = run_to_done(&env, spec).await;
    failed_with_nothing_pushed(&env, &done, "checks failed: good");

    let env = super::worker::env().await;
    let spec = checked(&env, "true", vec![check("stamp", "date +%s%N > stamp.txt")]);
    let done = run_to_done(&env, spec).await;
    failed_with_nothing_pushed(
        &env,
        &done,
        "the checks changed files again when run on their own changes: stamp.txt \
         (files a check writes each time belong in .gitignore)",
    );
}

/// A check that hangs is killed at its own timeout with its whole process group; it counts
/// as a failing check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_check_is_killed_at_its_timeout_with_its_process_group() {
    let env = env().await;
    let check = CheckSpec {
        timeout_secs: Some(1),
        ..check("hangs", GRANDCHILDREN)
    };
    let done = failed_check(&env, check).await;
    let run = &done.task.result.unwrap().checks[0];
    assert_eq!(run.killed.as_deref(), Some("timeout"));
    assert!(!run.passed && run.exit_code.is_none());
    assert!(run.output_tail.ends_with("ready"), "{}", run.output_tail);
    let lines: Vec<_> = run.output_tail.lines().map(str::to_string).collect();
    grandchildren_gone(&lines, "timeout");
}

/// A cancel while a check runs stops the check (its group) and ends the task canceled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_a_check_stops_it() {
    let env = env().await;
    let spec = checked(&env, "true", vec![check("hangs", GRANDCHILDREN)]);
    let task = env.store.enqueue(spec).await.unwrap().task;
    let w = start(
        config(&env, "w1", TOKEN),
        api(&env.store, Duration::from_secs(30)).await,
    );
    let lines = wait_log(&env.store, task.id, "ready").await;
    env.store.cancel(task.id).await.unwrap();
    let done = finished_within(&env.store, task.id, Duration::from_secs(60)).await;
    w.stop().await;
    assert_eq!(done.task.state, TaskState::Canceled);
    grandchildren_gone(&lines, "cancel");
}

/// A check that writes past its output limit is killed and fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_past_its_output_limit_is_killed() {
    let check = CheckSpec {
        max_output_bytes: Some(10_000),
        ..check("noisy", "yes line")
    };
    let done = failed_check(&env().await, check).await;
    let run = &done.task.result.unwrap().checks[0];
    assert_eq!(run.killed.as_deref(), Some("output_limit"));
    assert!(run.output_tail.len() <= agentpool_runner::checks::OUTPUT_TAIL_BYTES);
}

/// A secret a check prints is masked in its events and in the stored result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_a_check_prints_is_redacted_from_events_and_result() {
    let env = env().await;
    let done = failed_check(&env, check("leaky", &format!("echo token {TOKEN}; exit 1"))).await;
    let result = serde_json::to_string(&done.task.result).unwrap();
    assert!(result.contains("token "), "{result}");
    assert!(!result.contains(TOKEN), "the secret reached the result: {result}");
    let evs = serde_json::to_string(&events(&env.store, done.task.id).await).unwrap();
    assert!(!evs.contains(TOKEN), "the secret reached the events");
}
