//! Process control: output streaming, cleared environment, that timeout, cancel, output limits,
//! normal exits and abandoned runs leave no process of the group behind, and that a restarted
//! worker kills the groups a killed predecessor recorded — and only those.

use std::time::Duration;

use agentpool_agents::process::{
    GroupRecord, KillReason, OutputStream, ProcessOutcome, ProcessSpec, group_alive, run_process,
};
use agentpool_testkit::process::{alive, pids};
use tokio_util::sync::CancellationToken;

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec::new("sh")
        .arg("-c")
        .arg(script)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .kill_grace(Duration::from_millis(500))
}

/// Runs `spec` until it prints `ready`, then cancels it; every line up to then is also handed
/// to `each`.
async fn cancel_when_ready(spec: ProcessSpec, mut each: impl FnMut(&str) + Send) -> ProcessOutcome {
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    run_process(
        spec,
        &mut |_, l| {
            each(l);
            if l == "ready" {
                c.cancel();
            }
        },
        &cancel,
    )
    .await
    .unwrap()
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
    let mut lines = Vec::new();
    let outcome = cancel_when_ready(sh(GRANDCHILDREN), |l| lines.push(l.to_string())).await;
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
    let outcome = cancel_when_ready(
        sh("trap '' TERM; echo ready; while :; do sleep 0.05; done"),
        |_| {},
    )
    .await;
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

/// A process group like one a killed worker left behind: `sleep` in a group of its own with
/// `env` as its environment.
fn orphan_group(env: &[(&str, &str)]) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("sleep")
        .arg("1000")
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .envs(env.iter().copied())
        .process_group(0)
        .spawn()
        .unwrap()
}

/// `c` ended by SIGKILL (what [`agentpool_agents::process::kill_orphans`] sends).
fn assert_sigkilled(c: &mut std::process::Child) {
    let status = c.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
}

/// `pid start` of a worker process that is gone: a child that exited and was reaped.
fn gone_worker() -> String {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    format!("{pid} 1")
}

/// Field `n` (0 = the state) after the command name of /proc/`pid`/stat.
fn stat_field(pid: &str, n: usize) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields = stat.rsplit_once(')').unwrap().1.to_string();
    fields.split_whitespace().nth(n).unwrap().to_string()
}

/// The process group of `pid`.
fn pgid_of(pid: i32) -> i32 {
    stat_field(&pid.to_string(), 2).parse().unwrap()
}

/// The start time of `pid` (clock ticks since boot).
fn start_of(pid: i32) -> String {
    stat_field(&pid.to_string(), 19)
}

/// `pid start` of this process, a worker that still runs.
fn running_worker() -> String {
    format!("{} {}", std::process::id(), stat_field("self", 19))
}

#[tokio::test]
async fn kill_orphans_kills_recorded_groups_of_gone_workers_carrying_their_marker_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut marked = orphan_group(&[("AGENTPOOL_TASK_ID", "t1")]);
    let unmarked = orphan_group(&[("AGENTPOOL_TASK_ID", "other")]);
    let running = orphan_group(&[("AGENTPOOL_TASK_ID", "t3")]);
    let write = |name: &str, pid: u32, task: &str, worker: &str| {
        // The record a run writes: pgid, the marker, the worker that started it.
        std::fs::write(
            dir.path().join(name),
            format!("{pid}\nAGENTPOOL_TASK_ID={task}\n{worker}\n"),
        )
        .unwrap();
    };
    write("t1.pgid", marked.id(), "t1", &gone_worker());
    // A recorded group whose members lack the marker: the pgid was recycled by someone else.
    write("t2.pgid", unmarked.id(), "t2", &gone_worker());
    // A group whose worker still runs (another worker sharing the directory): not an orphan.
    write("t3.pgid", running.id(), "t3", &running_worker());

    assert_eq!(agentpool_agents::process::kill_orphans(dir.path()), 1);
    assert_sigkilled(&mut marked);
    assert!(
        alive(unmarked.id() as i32),
        "a group without the marker was killed"
    );
    assert!(alive(running.id() as i32), "a live worker's group was killed");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        ["t3.pgid"],
        "the records of the gone workers' groups are removed"
    );
    for mut c in [unmarked, running] {
        c.kill().unwrap();
        c.wait().unwrap();
    }
}

/// A process that left a killed worker's group (`setsid`) is found through the tree the
/// record names, by pid and start time; a pid whose start time differs (recycled) is not hit.
#[tokio::test]
async fn kill_orphans_kills_what_left_the_group_by_pid_and_start_time() {
    let dir = tempfile::tempdir().unwrap();
    let group = orphan_group(&[("AGENTPOOL_TASK_ID", "t1")]);
    let mut escaped = orphan_group(&[("AGENTPOOL_TASK_ID", "t1")]);
    let stranger = orphan_group(&[]);
    let (g, e, x) = (group.id() as i32, escaped.id() as i32, stranger.id() as i32);
    assert_ne!(pgid_of(e), g, "in a group of its own");
    std::fs::write(
        dir.path().join(format!("{g}.pgid")),
        format!(
            "{g}\nAGENTPOOL_TASK_ID=t1\n{}\n{e} {}\n{x} 1\n",
            gone_worker(),
            start_of(e)
        ),
    )
    .unwrap();
    assert_eq!(agentpool_agents::process::kill_orphans(dir.path()), 1);
    assert_sigkilled(&mut escaped);
    assert!(alive(x), "a pid whose start time differs was killed");
    for mut c in [group, stranger] {
        let _ = c.kill();
        c.wait().unwrap();
    }
}

/// A run's record names, after a census, a process its child started that left the group.
#[tokio::test]
async fn a_run_records_a_process_that_left_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let running = dir.path().join("running");
    let (tx, rx) = tokio::sync::oneshot::channel::<i32>();
    let mut tx = Some(tx);
    let cancel = CancellationToken::new();
    let run = {
        let cancel = cancel.clone();
        let spec =
            sh("setsid sleep 1000 & echo pid $!; wait").record_group(GroupRecord::task(&running, "t1"));
        tokio::spawn(async move {
            run_process(
                spec,
                &mut |_, l| {
                    if let (Some(p), Some(tx)) = (l.strip_prefix("pid "), tx.take()) {
                        let _ = tx.send(p.trim().parse().unwrap_or(0));
                    }
                },
                &cancel,
            )
            .await
        })
    };
    let pid = rx.await.unwrap();
    let wanted = format!("\n{pid} {}\n", start_of(pid));
    // The tree is taken every half second: wait (bounded) for the record to name it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let named = std::fs::read_dir(&running)
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
            .any(|t| t.contains(&wanted));
        if named {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the record never named {pid}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        pgid_of(pid),
        pid,
        "a group of its own: the run's group signal misses it"
    );
    cancel.cancel();
    run.await.unwrap().unwrap();
    assert!(!alive(pid), "the run's end kills what it saw");
}

/// `NAME=value` entries of a process's environment.
fn environ_of(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .map(|kv| String::from_utf8_lossy(kv).into_owned())
        .collect()
}

#[tokio::test]
async fn a_run_records_its_group_and_marks_its_processes_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let running = dir.path().join("running");
    let mut recorded = None;
    let mut environ = Vec::new();
    let outcome = cancel_when_ready(
        sh("echo ready; sleep 1000").record_group(GroupRecord::task(&running, "t1")),
        |l| {
            if l == "ready" {
                let files: Vec<_> = std::fs::read_dir(&running)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect();
                recorded = files
                    .first()
                    .map(|f| (f.clone(), std::fs::read_to_string(f).unwrap()));
                let pgid = recorded
                    .as_ref()
                    .and_then(|(_, t)| t.lines().next()?.parse::<i32>().ok());
                environ = pgid.map(environ_of).unwrap_or_default();
            }
        },
    )
    .await;
    assert_eq!(outcome.killed, Some(KillReason::Canceled));
    let (path, text) = recorded.expect("the run was recorded");
    assert_eq!(path.parent(), Some(running.as_path()));
    assert!(
        environ.iter().any(|kv| kv == "AGENTPOOL_TASK_ID=t1"),
        "the task's marker"
    );
    let run = environ
        .iter()
        .find(|kv| kv.starts_with("AGENTPOOL_RUN_ID="))
        .expect("the run's own marker");
    let id = run.trim_start_matches("AGENTPOOL_RUN_ID=");
    assert_eq!(
        path.file_name().unwrap().to_str(),
        Some(format!("{id}.pgid").as_str())
    );
    assert_eq!(
        text,
        format!(
            "{}\nAGENTPOOL_TASK_ID=t1\n{}\n{run}\n",
            outcome.pgid,
            running_worker()
        )
    );
    assert_eq!(
        std::fs::read_dir(&running).unwrap().count(),
        0,
        "the record outlived the run"
    );
}

/// The record is there before the run's process starts: a worker killed in the instant after
/// the spawn still leaves one, naming the run's marker.
#[tokio::test]
async fn a_run_is_recorded_before_its_process_starts() {
    let dir = tempfile::tempdir().unwrap();
    let running = dir.path().join("running");
    let mut lines = Vec::new();
    let spec = sh("cat \"$RECORDS\"/*.pgid; echo \"mine AGENTPOOL_RUN_ID=$AGENTPOOL_RUN_ID\"")
        .env("RECORDS", running.as_os_str())
        .record_group(GroupRecord::task(&running, "t1"));
    let outcome = run_process(
        spec,
        &mut |_, l| lines.push(l.to_string()),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(outcome.success(), "{lines:?}");
    let mine = lines
        .last()
        .and_then(|l| l.strip_prefix("mine "))
        .unwrap()
        .to_string();
    assert!(mine.len() > "AGENTPOOL_RUN_ID=".len(), "{mine}");
    assert!(
        lines[..lines.len() - 1].contains(&mine),
        "its record, read by the run itself: {lines:?}"
    );
    assert_eq!(std::fs::read_dir(&running).unwrap().count(), 0);
}

/// A worker killed between writing a run's record and noting its group (or whose run's
/// processes all left the group) left a record naming only the run's marker: whatever carries
/// that marker is killed; a process of another run of the same task (another worker's, on
/// the same host) is not.
#[tokio::test]
async fn kill_orphans_kills_what_carries_the_runs_marker_when_no_group_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let mut orphan = orphan_group(&[("AGENTPOOL_TASK_ID", "t1"), ("AGENTPOOL_RUN_ID", "r-dead-1")]);
    let mut second = orphan_group(&[("AGENTPOOL_TASK_ID", "t2"), ("AGENTPOOL_RUN_ID", "r-dead-2")]);
    let other_run = orphan_group(&[("AGENTPOOL_TASK_ID", "t1"), ("AGENTPOOL_RUN_ID", "r-live-1")]);
    // Two runs the dead worker left: one pass over the processes finds what each left.
    for (task, run) in [("t1", "r-dead-1"), ("t2", "r-dead-2")] {
        std::fs::write(
            dir.path().join(format!("{run}.pgid")),
            format!(
                "0\nAGENTPOOL_TASK_ID={task}\n{}\nAGENTPOOL_RUN_ID={run}\n",
                gone_worker()
            ),
        )
        .unwrap();
    }
    assert_eq!(agentpool_agents::process::kill_orphans(dir.path()), 2);
    assert_sigkilled(&mut orphan);
    assert_sigkilled(&mut second);
    assert!(alive(other_run.id() as i32), "another run of the task was killed");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "the records are removed"
    );
    let mut other_run = other_run;
    other_run.kill().unwrap();
    other_run.wait().unwrap();
}

#[tokio::test]
async fn dropping_a_run_half_way_kills_its_group() {
    let (tx, rx) = tokio::sync::oneshot::channel::<i32>();
    let mut tx = Some(tx);
    let run = tokio::spawn(async move {
        run_process(
            sh("sleep 1000 & echo pid $!; wait"),
            &mut |_, l| {
                if let (Some(pid), Some(tx)) = (l.strip_prefix("pid "), tx.take()) {
                    let _ = tx.send(pid.trim().parse().unwrap_or(0));
                }
            },
            &CancellationToken::new(),
        )
        .await
    });
    let pid = rx.await.unwrap();
    assert!(alive(pid));
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    // SIGKILL is delivered asynchronously: wait for the kernel to reap the signalled process.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while alive(pid) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!alive(pid), "the abandoned run's child {pid} survived");
}
