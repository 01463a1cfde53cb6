//! Tests of the human output: times, tables, events and results as people read them.

use super::*;
use agentpool_core::protocol::WaitReason;
use agentpool_core::{Event, EventKind};
use chrono::TimeZone;
use serde_json::{Value, json};

#[test]
fn relative_times_read_naturally() {
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
    let ago = |s: i64| relative_to(now - chrono::Duration::seconds(s), now);
    assert_eq!(ago(0), "just now");
    assert_eq!(ago(42), "42s ago");
    assert_eq!(ago(180), "3m ago");
    assert_eq!(ago(5 * 3600), "5h ago");
    assert_eq!(ago(2 * 86400), "2d ago");
    assert_eq!(ago(-120), "in 2m");
    // To the nearest unit, as the dashboard says it.
    assert_eq!(ago(-(2 * 3600 - 60)), "in 2h");
    assert_eq!(ago(-(90 * 60 - 1)), "in 1h");
    assert_eq!(ago(59 * 60 + 40), "1h ago");
    assert_eq!(ago(150), "3m ago");
    assert_eq!(ago(23 * 3600 + 1800), "1d ago");
    assert_eq!(ago(36 * 3600), "2d ago");
}

#[test]
fn tables_align_columns_ignoring_colour_codes() {
    let style = Style { color: true };
    let t = table(
        &Style::plain(),
        &["A", "B"],
        &[
            vec![style.red("x"), "1".into()],
            vec!["long".into(), "2".into()],
            vec!["y".into(), String::new()],
        ],
    );
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines[0], "A     B");
    assert_eq!(lines[2], "long  2");
    assert_eq!(visible_width(lines[1]), "x     1".len());
    assert_eq!(lines[3], "y", "an empty last cell leaves no trailing spaces");
}

fn ev(kind: EventKind, data: Value) -> Event {
    Event {
        task_id: agentpool_core::TaskId::new(),
        seq: 1,
        at: Utc::now(),
        payload: agentpool_core::EventPayload::from_parts(kind, data),
    }
}

#[test]
fn tool_calls_show_their_key_argument() {
    let s = Style::plain();
    let line = render_event(
        &s,
        &ev(
            EventKind::ToolCall,
            json!({"name":"Write","input":{"file_path":"src/a.rs","content":"x"}}),
        ),
    )
    .unwrap();
    assert!(line.ends_with("→ Write src/a.rs"), "{line}");
    let line = render_event(
        &s,
        &ev(
            EventKind::ToolCall,
            json!({"name":"Bash","input":{"command":"cargo test"}}),
        ),
    )
    .unwrap();
    assert!(line.ends_with("→ Bash cargo test"), "{line}");
}

#[test]
fn results_and_usage_are_summarised_not_dumped() {
    let s = Style::plain();
    let ok = render_event(
        &s,
        &ev(EventKind::ToolResult, json!({"ok":true,"output":"a\nb\nc"})),
    )
    .unwrap();
    assert!(ok.ends_with("← ok 3 lines"), "{ok}");
    let err = render_event(
        &s,
        &ev(EventKind::ToolResult, json!({"ok":false,"output":"no such file"})),
    )
    .unwrap();
    assert!(err.ends_with("← error no such file"), "{err}");
    let u = render_event(
        &s,
        &ev(
            EventKind::Usage,
            json!({"input_tokens":10,"output_tokens":5,"cost_usd":0.5}),
        ),
    )
    .unwrap();
    assert!(u.ends_with("Σ 10 in, 5 out tokens, $0.5000"), "{u}");
    assert!(render_event(&s, &ev(EventKind::AssistantMessage, json!({"text":"  "}))).is_none());
}

/// A retried task's view lists each attempt's cost and the total: the result's cost is its
/// last attempt's only.
#[test]
fn a_retried_tasks_attempts_say_what_each_cost_and_the_total() {
    use agentpool_core::protocol::TaskDetail;
    use agentpool_core::{Attempt, AttemptOutcome, ErrorClass, LeaseToken, WorkerId};
    let now = Utc::now();
    let attempt = |number, outcome, cost_usd| Attempt {
        task_id: agentpool_core::TaskId::new(),
        number,
        worker_id: WorkerId::parse("w1").unwrap(),
        lease_token: LeaseToken(i64::from(number)),
        started_at: now,
        ended_at: Some(now),
        outcome,
        error_class: (outcome == AttemptOutcome::Failed).then_some(ErrorClass::AgentError),
        error_message: None,
        cost_usd,
    };
    let task: agentpool_core::Task = serde_json::from_value(json!({
        "id": agentpool_core::TaskId::new(), "spec": {"kind": "command", "command": "true"},
        "state": "succeeded", "attempts": 2, "max_attempts": 3, "priority": 0,
        "created_at": now, "updated_at": now, "run_after": now, "started_at": now,
        "finished_at": now, "worker_id": "w1", "lease_token": 2, "lease_expires_at": null,
        "error_class": null, "error_message": null, "result": {"cost_usd": 0.045}
    }))
    .unwrap();
    let view = TaskDetail {
        task,
        attempts_detail: vec![
            attempt(1, AttemptOutcome::Failed, Some(0.031)),
            attempt(2, AttemptOutcome::Succeeded, Some(0.045)),
        ],
        waiting: Vec::new(),
    };
    let shown = task_detail(&Style::plain(), &view);
    assert!(shown.contains("all tries  $0.0760 over 2 attempts"), "{shown}");
    assert!(
        shown.contains("  #1 failed     0ms      $0.0310  w1 AGENT_ERROR"),
        "{shown}"
    );
}

/// `tasks show` of `task`, without colour, attempts or waiting reasons.
fn detail(task: agentpool_core::Task) -> String {
    task_detail(
        &Style::plain(),
        &agentpool_core::protocol::TaskDetail {
            task,
            attempts_detail: Vec::new(),
            waiting: Vec::new(),
        },
    )
}

/// The tasks table says a finished task's error class as its outcome, and a queued or running
/// one's as what its retry follows.
#[test]
fn a_retrying_tasks_class_is_what_its_retry_follows() {
    let now = Utc::now();
    let task = |state: &str, class: Option<&str>| -> agentpool_core::Task {
        serde_json::from_value(json!({
            "id": agentpool_core::TaskId::new(), "spec": {"kind": "command", "command": "true"},
            "state": state, "attempts": 1, "max_attempts": 3, "priority": 0,
            "created_at": now, "updated_at": now, "run_after": now,
            "error_class": class, "error_message": null
        }))
        .unwrap()
    };
    let shown = tasks_table(
        &Style::plain(),
        &[
            task("running", Some("LEASE_EXPIRED")),
            task("failed", Some("TIMEOUT")),
            task("succeeded", None),
        ],
    );
    let ends: Vec<_> = shown
        .lines()
        .skip(1)
        .map(|l| l.rsplit("$ true").next().unwrap().trim())
        .collect();
    assert_eq!(ends, ["after LEASE_EXPIRED", "TIMEOUT", ""], "{shown}");
    // So does its detail.
    let shown = detail(task("running", Some("LEASE_EXPIRED")));
    assert!(shown.contains("\nretrying   after LEASE_EXPIRED"), "{shown}");
    assert!(!shown.contains("\nerror"), "{shown}");
    let shown = detail(task("failed", Some("TIMEOUT")));
    assert!(shown.contains("\nerror      TIMEOUT"), "{shown}");
}

/// Key-value lines line their values up in colour as they do without: the key is padded by
/// what shows, not by its escape codes.
#[test]
fn fields_align_in_colour() {
    for style in [Style::plain(), Style { color: true }] {
        let shown = field(&style, "task", "a") + &field(&style, "attempts", "b");
        let columns: Vec<usize> = shown
            .lines()
            .map(|l| {
                let at = l.rfind(' ').unwrap() + 1;
                visible_width(&l[..at])
            })
            .collect();
        assert_eq!(columns, [11, 11], "{shown:?}");
    }
}

/// An agent task that named no agent says which agent ran it, once one has: the worker's
/// default, marked as such.
#[test]
fn a_task_on_the_default_agent_says_which_agent_ran_it() {
    let now = Utc::now();
    let task = |result: Value| -> agentpool_core::Task {
        serde_json::from_value(json!({
            "id": agentpool_core::TaskId::new(), "spec": {"kind": "agent", "prompt": "fix it"},
            "state": "succeeded", "attempts": 1, "max_attempts": 3, "priority": 0,
            "created_at": now, "updated_at": now, "run_after": now, "result": result
        }))
        .unwrap()
    };
    let shown = detail(task(json!({"agent": "codex"})));
    assert!(shown.contains("\nwhat       codex: fix it\n"), "{shown}");
    assert!(
        shown.contains("\nagent      codex (the worker's default)\n"),
        "{shown}"
    );
    // Before it ran, nothing is guessed.
    let shown = detail(task(Value::Null));
    assert!(shown.contains("\nwhat       agent: fix it\n"), "{shown}");
    assert!(!shown.contains("\nagent "), "{shown}");
}

/// A queued task waiting out its retry's backoff says when it runs once, and no "took": its
/// result is the last attempt's, and the task is not over.
#[test]
fn a_task_waiting_to_retry_says_when_it_runs_once_and_not_what_it_took() {
    use agentpool_core::protocol::TaskDetail;
    let now = Utc::now();
    let later = now + chrono::Duration::seconds(8);
    let task = |state: &str| -> agentpool_core::Task {
        serde_json::from_value(json!({
            "id": agentpool_core::TaskId::new(), "spec": {"kind": "command", "command": "true"},
            "state": state, "attempts": 1, "max_attempts": 3, "priority": 0,
            "created_at": now, "updated_at": now, "run_after": later,
            "error_class": "AGENT_ERROR", "error_message": null,
            "result": {"duration_ms": 37, "exit_code": 1}
        }))
        .unwrap()
    };
    let view = |task| TaskDetail {
        task,
        attempts_detail: Vec::new(),
        waiting: vec![WaitReason::Scheduled { run_after: later }],
    };
    let shown = task_detail(&Style::plain(), &view(task("queued")));
    assert_eq!(shown.matches("runs in").count(), 1, "{shown}");
    assert!(shown.contains("\nwaiting    scheduled, runs in "), "{shown}");
    assert!(!shown.contains("\nruns "), "{shown}");
    assert!(!shown.contains("took"), "{shown}");
    assert!(shown.contains("\nexit       1\n"), "{shown}");
    // Without a waiting reason (an older server), `run_after` says it.
    let shown = detail(task("queued"));
    assert!(shown.contains("\nruns       in "), "{shown}");
    // A finished task says how long it took.
    let shown = detail(task("failed"));
    assert!(shown.contains("\ntook       37ms\n"), "{shown}");
}

/// A key longer than the usual column (`credentials`) widens it for every line, and the
/// lines a stacked value goes on over move with it.
#[test]
fn a_long_key_widens_the_detail_column() {
    let rows = [
        ("project", "web".to_string()),
        ("credentials", "gh-token, npm".to_string()),
        ("checks", stacked(["cargo test", "cargo clippy"])),
        ("empty", String::new()),
    ];
    assert_eq!(
        fields(&Style::plain(), &rows),
        "project     web\n\
         credentials gh-token, npm\n\
         checks      cargo test\n\
         \x20           cargo clippy\n"
    );
    // Short keys keep the usual column.
    assert_eq!(
        fields(&Style::plain(), &[("repo", "x".to_string())]),
        field(&Style::plain(), "repo", "x")
    );
}

/// A worker that names no project takes every project's tasks: its column says `all`, as the
/// tokens table does, not nothing.
#[test]
fn a_worker_of_every_project_says_all() {
    let any = agentpool_testkit::worker::worker("any", &["codex"], 1);
    let web = Worker {
        projects: vec!["web".into(), "api".into()],
        ..agentpool_testkit::worker::worker("web", &["codex"], 1)
    };
    let shown = workers_table(&Style::plain(), &[any, web]);
    let column = |id: &str| {
        let row = shown.lines().find(|l| l.starts_with(id)).unwrap();
        row.split_whitespace().nth(4).unwrap().to_string()
    };
    assert_eq!(column("any"), "all", "{shown}");
    assert_eq!(column("web"), "web,api", "{shown}");
}

/// What a worker says of itself follows the table, under its own status: why it is
/// unhealthy, or (one that claims) which agent it no longer runs.
#[test]
fn a_workers_message_follows_the_table_under_its_status() {
    let sick = Worker {
        status: agentpool_core::WorkerStatus::Unhealthy,
        status_message: Some("git could not be started".into()),
        ..agentpool_testkit::worker::worker("sick", &["codex"], 1)
    };
    let limited = Worker {
        status_message: Some("runs no claude-code tasks: its key was refused".into()),
        ..agentpool_testkit::worker::worker("limited", &["codex"], 1)
    };
    let shown = workers_table(&Style::plain(), &[sick, limited]);
    assert!(
        shown.contains("\nunhealthy sick: git could not be started\n"),
        "{shown}"
    );
    assert!(
        shown.contains("\nidle limited: runs no claude-code tasks: its key was refused\n"),
        "{shown}"
    );
}

/// A commit that reached no remote says so, and where it is; a pushed one names its branch.
#[test]
fn an_unpushed_commit_says_where_it_is() {
    let s = Style::plain();
    let r = agentpool_core::TaskResult {
        commit_sha: Some("fa10ac71d3510000".into()),
        pushed: false,
        push_result: Some(
            "not pushed (the task asked for no push): the commit was discarded with the workspace".into(),
        ),
        ..Default::default()
    };
    let out = result_lines(&s, &r);
    assert!(out.contains("fa10ac71d351"), "{out}");
    assert!(
        out.contains("the commit was discarded with the workspace"),
        "{out}"
    );
    let pushed = agentpool_core::TaskResult {
        pushed: true,
        branch: Some("agentpool/x".into()),
        push_result: Some("ok".into()),
        ..r
    };
    let out = result_lines(&s, &pushed);
    assert!(
        !out.contains("ok\n") && out.contains("agentpool/x (pushed)"),
        "{out}"
    );
}

/// A file's line says how it changed where its counts cannot (new, deleted, a mode change);
/// an edit, or a file an older worker reported, shows its counts alone.
#[test]
fn a_files_line_says_what_its_counts_cannot() {
    use agentpool_core::{FileChange, FileStatus};
    let with = |path: &str, status, mode: Option<&str>| FileChange {
        status: Some(status),
        mode_change: mode.map(String::from),
        ..FileChange::counted(path, Some(0), Some(0))
    };
    let r = agentpool_core::TaskResult {
        files: vec![
            with("run.sh", FileStatus::Modified, Some("100644 -> 100755")),
            with("empty.txt", FileStatus::Added, None),
            with("gone.txt", FileStatus::Deleted, None),
            FileChange::counted("edited.rs", Some(2), Some(1)),
        ],
        ..Default::default()
    };
    let out = result_lines(&Style::plain(), &r);
    for line in [
        "run.sh +0 -0 (mode 100644 -> 100755)",
        "empty.txt +0 -0 (new)",
        "gone.txt +0 -0 (deleted)",
    ] {
        assert!(out.contains(line), "{line:?} in {out}");
    }
    assert!(out.contains("edited.rs +2 -1\n"), "{out}");
}
