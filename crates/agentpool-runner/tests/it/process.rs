//! Process control: output streaming, cleared environment, and that timeout, cancel, output
//! limits and normal exits leave no process of the group behind.

use std::time::Duration;

use agentpool_runner::process::{KillReason, OutputStream, ProcessSpec, group_alive, run_process};
use tokio_util::sync::CancellationToken;

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec::new("sh")
        .arg("-c")
        .arg(script)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .kill_grace(Duration::from_millis(500))
}

/// Pids printed by the script as `pid N`.
fn pids(lines: &[String]) -> Vec<i32> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("pid "))
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().and_then(|r| r.split_whitespace().next());
            !matches!(state, Some("Z" | "X"))
        }
        Err(_) => false,
    }
}

const GRANDCHILDREN: &str = "sleep 1000 & echo pid $!; sleep 1000 & echo pid $!; echo ready; wait";

#[tokio::test]
async fn streams_lines_with_only_the_given_environment() {
    let mut lines = Vec::new();
    let spec = sh("echo out-$FOO; echo err >&2; echo HOME=${HOME:-unset}").env("FOO", "bar");
    let outcome = run_process(
        spec,
        &mut |s, l| lines.push((s, l.to_string())),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(outcome.success());
    assert!(lines.contains(&(OutputStream::Stdout, "out-bar".to_string())));
    assert!(lines.contains(&(OutputStream::Stderr, "err".to_string())));
    assert!(
        lines.contains(&(OutputStream::Stdout, "HOME=unset".to_string())),
        "{lines:?}"
    );
}

#[tokio::test]
async fn cancel_kills_the_whole_group_including_grandchildren() {
    let cancel = CancellationToken::new();
    let mut lines = Vec::new();
    let c = cancel.clone();
    let outcome = run_process(
        sh(GRANDCHILDREN),
        &mut |_, l| {
            if l == "ready" {
                c.cancel();
            }
            lines.push(l.to_string());
        },
        &cancel,
    )
    .await
    .unwrap();
    assert_eq!(outcome.killed, Some(KillReason::Canceled));
    let children = pids(&lines);
    assert_eq!(children.len(), 2);
    assert!(!group_alive(outcome.pgid), "a member of the group survived");
    for pid in children {
        assert!(!alive(pid), "grandchild {pid} survived");
    }
}

#[tokio::test]
async fn timeout_kills_the_whole_group_including_grandchildren() {
    let mut lines = Vec::new();
    let outcome = run_process(
        sh(GRANDCHILDREN).timeout(Duration::from_millis(300)),
        &mut |_, l| lines.push(l.to_string()),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(outcome.killed, Some(KillReason::Timeout));
    assert!(!group_alive(outcome.pgid));
    for pid in pids(&lines) {
        assert!(!alive(pid), "grandchild {pid} survived");
    }
}

#[tokio::test]
async fn a_process_ignoring_sigterm_is_killed_after_the_grace_period() {
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let outcome = run_process(
        sh("trap '' TERM; echo ready; while :; do sleep 0.05; done"),
        &mut |_, l| {
            if l == "ready" {
                c.cancel();
            }
        },
        &cancel,
    )
    .await
    .unwrap();
    assert_eq!(outcome.killed, Some(KillReason::Canceled));
    assert_eq!(outcome.signal, Some(libc::SIGKILL));
    assert!(
        outcome.duration >= Duration::from_millis(500),
        "SIGKILL came before the grace period"
    );
    assert!(!group_alive(outcome.pgid));
}

#[tokio::test]
async fn output_beyond_the_limit_kills_the_process() {
    let mut seen = 0u64;
    let outcome = run_process(
        sh("yes 0123456789").max_output_bytes(100_000),
        &mut |_, l| seen += l.len() as u64 + 1,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(outcome.killed, Some(KillReason::OutputLimit));
    assert!(seen <= 100_000, "delivered {seen} bytes past the limit");
    assert!(!group_alive(outcome.pgid));
}

#[tokio::test]
async fn background_processes_left_by_a_finished_command_are_killed() {
    let mut lines = Vec::new();
    let outcome = run_process(
        sh("sleep 1000 >/dev/null 2>&1 & echo pid $!; exit 3"),
        &mut |_, l| lines.push(l.to_string()),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(outcome.exit_code, Some(3));
    assert_eq!(outcome.killed, None);
    let children = pids(&lines);
    assert_eq!(children.len(), 1);
    assert!(!alive(children[0]), "background child survived its parent");
    assert!(!group_alive(outcome.pgid));
}
