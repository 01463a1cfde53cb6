//! Process control against real processes: groups, trees, what escaped both (by the run's
//! marker), timeouts, output limits.

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

/// A script that double-forks a sleeper out of the run — `(setsid … &)`: reparented to init at
/// once, in a session and group of its own, so never in the group nor in a census of the tree —
/// waits until the sleeper has written its pid to `pidfile`, then runs `then`.
fn escaping_sleeper(pidfile: &std::path::Path, then: &str) -> String {
    let p = pidfile.display();
    format!(
        "(setsid sh -c 'echo $$ > {p}; exec sleep 300' >/dev/null 2>&1 &); \
         while [ ! -s {p} ]; do sleep 0.01; done; {then}"
    )
}

/// `script` as a run recorded (and so marked) in `dir`, as the runner runs a task's command.
fn recorded(script: &str, dir: &std::path::Path) -> ProcessSpec {
    spec(script).record_group(GroupRecord::task(dir.join("running"), "t1"))
}

fn pid_in(pidfile: &std::path::Path) -> i32 {
    std::fs::read_to_string(pidfile).unwrap().trim().parse().unwrap()
}

#[tokio::test]
async fn a_double_forked_process_is_killed_when_its_run_ends() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let exit = run(recorded(&escaping_sleeper(&pidfile, "exit 0"), dir.path())).await;
    assert_eq!(exit.exit_code, Some(0));
    assert_eq!(exit.killed, None);
    assert_gone(&pidfile, "double-forked process (after the run)");
}

#[tokio::test]
async fn a_double_forked_process_is_killed_with_its_run_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    // Long enough for the sleeper to write its pid first: the run then only waits.
    let s =
        recorded(&escaping_sleeper(&pidfile, "exec sleep 300"), dir.path()).timeout(Duration::from_secs(3));
    let exit = run(s).await;
    assert_eq!(exit.killed, Some(KillReason::Timeout));
    assert_gone(&pidfile, "double-forked process (after the timeout)");
}

#[tokio::test]
async fn a_double_forked_process_is_killed_with_its_run_on_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = escaping_sleeper(&pidfile, "echo ready; exec sleep 300");
    let exit = cancel_on(recorded(&script, dir.path()), "ready").await;
    assert_eq!(exit.killed, Some(KillReason::Canceled));
    assert_gone(&pidfile, "double-forked process (after the cancel)");
}

/// Two runs of the same task on the same worker: the end of one kills only what carries its
/// own marker, not what the other (still running) left behind.
#[tokio::test]
async fn the_end_of_a_run_spares_what_another_run_started() {
    let dir = tempfile::tempdir().unwrap();
    let (first_pid, second_pid) = (dir.path().join("first"), dir.path().join("second"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut tx = Some(tx);
    let cancel = CancellationToken::new();
    let first = {
        let spec = recorded(
            &escaping_sleeper(&first_pid, "echo ready; exec sleep 300"),
            dir.path(),
        );
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut on_line = move |_: OutputStream, l: &str| {
                if let (true, Some(tx)) = (l == "ready", tx.take()) {
                    let _ = tx.send(());
                }
            };
            run_process(spec, &mut on_line, &cancel).await
        })
    };
    rx.await.unwrap();
    let exit = run(recorded(&escaping_sleeper(&second_pid, "exit 0"), dir.path())).await;
    assert_eq!(exit.exit_code, Some(0));
    assert_gone(&second_pid, "the ended run's double-forked process");
    let other = pid_in(&first_pid);
    assert!(alive(other), "the other run's process {other} was killed");
    cancel.cancel();
    let exit = first.await.unwrap().unwrap();
    assert_eq!(exit.killed, Some(KillReason::Canceled));
    assert_gone(&first_pid, "the other run's process, at its own end");
}

#[tokio::test]
async fn dropping_a_recorded_run_half_way_kills_what_double_forked() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut tx = Some(tx);
    let spec = recorded(
        &escaping_sleeper(&pidfile, "echo ready; exec sleep 300"),
        dir.path(),
    );
    let run = tokio::spawn(async move {
        let mut on_line = move |_: OutputStream, l: &str| {
            if let (true, Some(tx)) = (l == "ready", tx.take()) {
                let _ = tx.send(());
            }
        };
        run_process(spec, &mut on_line, &CancellationToken::new()).await
    });
    rx.await.unwrap();
    let pid = pid_in(&pidfile);
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    // The abandoned run cannot wait for the SIGKILL it sent to land: wait for it here.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while alive(pid) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !alive(pid),
        "the abandoned run's double-forked process {pid} survived"
    );
}
