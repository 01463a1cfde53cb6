//! Process control against real processes: groups, trees, timeouts, output limits.

use agentpool_testkit::process::alive;

use super::*;

fn spec(script: &str) -> ProcessSpec {
    ProcessSpec::new("/bin/sh")
        .args(["-c", script])
        .cwd(std::env::temp_dir())
        .envs(base_env(None))
        .timeout(Duration::from_secs(30))
        .max_output_bytes(1 << 20)
        .kill_grace(Duration::from_secs(2))
}

/// Runs `spec` and cancels it when it prints `line`.
async fn cancel_on(spec: ProcessSpec, line: &'static str) -> ProcessOutcome {
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    run_process(
        spec,
        &mut move |_, l| {
            if l == line {
                c.cancel();
            }
        },
        &cancel,
    )
    .await
    .unwrap()
}

/// Runs `spec` to its end, ignoring its output.
async fn run(spec: ProcessSpec) -> ProcessOutcome {
    run_process(spec, &mut |_, _| {}, &CancellationToken::new())
        .await
        .unwrap()
}

/// A script that starts a sleeper writing its pid to `pidfile` in a session and group of its
/// own (setsid, as some agents do), then runs `then`.
fn detached_sleeper(pidfile: &std::path::Path, then: &str) -> String {
    format!(
        "setsid sh -c 'echo $$ > {}; exec sleep 300' & {then}",
        pidfile.display()
    )
}

/// The process whose pid is in `pidfile` is gone.
fn assert_gone(pidfile: &std::path::Path, what: &str) {
    let pid: i32 = std::fs::read_to_string(pidfile).unwrap().trim().parse().unwrap();
    assert!(!alive(pid), "{what}: {pid} survived");
}

#[tokio::test]
async fn lines_from_both_streams_arrive_and_exit_code_is_kept() {
    let mut lines = Vec::new();
    let exit = run_process(
        spec("echo out; echo err >&2; exit 3"),
        &mut |s, l| lines.push((s, l.to_string())),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(exit.exit_code, Some(3));
    assert!(lines.contains(&(OutputStream::Stdout, "out".to_string())));
    assert!(lines.contains(&(OutputStream::Stderr, "err".to_string())));
}

#[tokio::test]
async fn environment_is_cleared() {
    let mut lines = Vec::new();
    // SAFETY: set in a test before spawning; no other thread reads this variable.
    unsafe { std::env::set_var("AGENTPOOL_SECRET_FOR_TEST", "leak") };
    run_process(
        spec("echo \"[$AGENTPOOL_SECRET_FOR_TEST]\""),
        &mut |_, l| lines.push(l.to_string()),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(lines, vec!["[]".to_string()]);
}

#[tokio::test]
async fn timeout_kills_the_group_including_children() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let s = spec(&format!("sleep 300 & echo $! > {}; wait", pidfile.display()))
        .timeout(Duration::from_millis(500));
    let exit = run(s).await;
    assert_eq!(exit.killed, Some(KillReason::Timeout));
    assert_gone(&pidfile, "child sleep");
}

#[tokio::test]
async fn output_limit_kills() {
    let s = spec("yes agentpool").max_output_bytes(10_000);
    let exit = run(s).await;
    assert_eq!(exit.killed, Some(KillReason::OutputLimit));
}

#[tokio::test]
async fn cancel_ends_the_process() {
    let exit = cancel_on(spec("echo started; sleep 300"), "started").await;
    assert_eq!(exit.killed, Some(KillReason::Canceled));
    assert!(exit.duration < Duration::from_secs(30));
}

#[tokio::test]
async fn cancel_reaches_children_that_left_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let ready = format!(
        "while [ ! -s {} ]; do sleep 0.05; done; echo ready; wait",
        pidfile.display()
    );
    let exit = cancel_on(spec(&detached_sleeper(&pidfile, &ready)), "ready").await;
    assert_eq!(exit.killed, Some(KillReason::Canceled));
    assert_gone(&pidfile, "detached child");
}

#[tokio::test]
async fn a_detached_child_left_behind_by_a_clean_exit_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    // The leader exits 0 after the tree was recorded.
    let exit = run(spec(&detached_sleeper(&pidfile, "sleep 1.5; exit 0"))).await;
    assert_eq!(exit.exit_code, Some(0));
    assert_eq!(exit.killed, None);
    assert_gone(&pidfile, "detached child (after the run)");
}

#[tokio::test]
async fn long_lines_are_split_or_truncated_as_asked() {
    let script = "printf '%s\\n' abcdefghij; echo short";
    let mut split = Vec::new();
    let out = run_process(
        spec(script).max_line_bytes(4),
        &mut |_, l| split.push(l.to_string()),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(split, ["abcd", "efgh", "ij", "shor", "t"]);
    assert_eq!(out.output_bytes, 17);
    let mut cut = Vec::new();
    let out = run_process(
        spec(script).max_line_bytes(4).long_lines(LongLines::Truncate),
        &mut |_, l| cut.push(l.to_string()),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(cut, ["abcd", "shor"]);
    // The dropped rest still counts against the output limit.
    assert_eq!(out.output_bytes, 17);
}
