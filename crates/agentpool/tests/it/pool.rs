//! `up`, `tasks logs -f` and the worker commands against a running embedded pool.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::{Env, Up, json, stderr, stdout};

#[test]
fn logs_follow_shows_a_running_task_until_it_ends() {
    let env = Env::new();
    let remote = env.sample_repo();
    let up = Up::start(&env, 1);
    let gate = env.dir.path().join("gate");
    let command = format!(
        "echo waiting-for-gate; while [ ! -e {g} ]; do sleep 0.05; done; echo passed-gate",
        g = gate.display()
    );
    let sub = env.run(&[
        "--server",
        &up.url,
        "submit",
        "--repo",
        remote.to_str().unwrap(),
        "--command",
        &command,
    ]);
    assert_eq!(sub.status.code(), Some(0), "{}", stderr(&sub));
    let id = stdout(&sub).trim().to_string();

    let mut logs = env
        .cmd()
        .args(["--server", &up.url, "tasks", "logs", "-f", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(logs.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    // The task is running and blocked on the gate: its first output arrives live.
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("waiting-for-gate") {
            break;
        }
    }
    assert!(seen.iter().any(|l| l.contains("waiting-for-gate")), "{seen:?}");
    std::fs::write(&gate, "").unwrap();
    for line in lines {
        seen.push(line.unwrap());
    }
    let status = logs.wait().unwrap();
    assert!(status.success());
    assert!(seen.iter().any(|l| l.contains("passed-gate")), "{seen:?}");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut logs.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("succeeded"), "{err}");
    drop(up);
}

#[test]
fn up_registers_its_workers_and_stops_cleanly_on_sigterm() {
    let env = Env::new();
    let up = Up::start(&env, 2);
    // Later commands find the `up` server through the data dir, without --server.
    let o = env.run(&["workers", "list", "--output", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let workers = json(&o);
    assert_eq!(workers.as_array().map(Vec::len), Some(2), "{workers}");
    let status = up.stop();
    assert!(status.success(), "{status}");
    // Its state file is gone, so commands no longer find it.
    let o = env.run(&["workers", "list"]);
    assert_eq!(o.status.code(), Some(4));
}

#[test]
fn credentials_reach_only_the_tasks_that_name_them_and_never_their_logs() {
    let env = Env::new();
    let remote = env.sample_repo();
    let repo = remote.to_str().unwrap();
    let up = Up::start(&env, 1);
    let mut put = env
        .cmd()
        .args(["--server", &up.url, "credentials", "put", "demo_secret"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut put.stdin.take().unwrap(), b"s3cret-value\n").unwrap();
    let o = put.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let names = json(&env.run(&["--server", &up.url, "credentials", "list", "-o", "json"]));
    assert_eq!(names, serde_json::json!(["demo_secret"]));

    let with = env.run(&[
        "--server",
        &up.url,
        "submit",
        "--repo",
        repo,
        "--credential",
        "demo_secret",
        "--wait",
        "--command",
        r#"test "$DEMO_SECRET" = s3cret-value && echo "value: $DEMO_SECRET""#,
    ]);
    assert_eq!(with.status.code(), Some(0), "{}", stderr(&with));
    let id = stdout(&with)
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_string();
    let logs = env.run(&["--server", &up.url, "tasks", "logs", &id]);
    assert!(stdout(&logs).contains("value: "), "{}", stdout(&logs));
    assert!(!stdout(&logs).contains("s3cret-value"), "{}", stdout(&logs));

    let without = env.run(&[
        "--server",
        &up.url,
        "submit",
        "--repo",
        repo,
        "--wait",
        "--command",
        r#"test -z "$DEMO_SECRET""#,
    ]);
    assert_eq!(without.status.code(), Some(0), "{}", stderr(&without));
    drop(up);
}
