//! Ctrl-C of the commands that follow a task: on a server they stop following and exit 130
//! (the task goes on); a transient pool's `run` cancels its task.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::run::{Pool, interrupt_once_started};
use crate::{SpawnReaped, json, signal, stderr};

/// What a follower interrupted on a server says, alone, on stderr.
fn stopped_following(id: &str) -> String {
    format!(
        "agentpool: stopped following; the task goes on: `agentpool tasks logs -f {id}` \
         follows it again, `agentpool tasks cancel {id}` stops it"
    )
}

/// `submit --wait` and `tasks logs -f` interrupted: one line saying the task goes on, exit 130
/// — not a silent death by the signal — and the task still runs.
#[test]
fn interrupting_submit_wait_or_logs_follow_says_the_task_goes_on_and_exits_130() {
    let pool = Pool::start();
    let mut waiting = pool
        .env
        .cmd()
        .args(pool.submit_args("echo task-started; sleep 600", &["--wait"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_reaped();
    let mut lines = BufReader::new(waiting.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a line naming the task").unwrap();
    let id = first.split_whitespace().last().unwrap().to_string();
    signal(&waiting, "INT");
    for _ in lines {}
    let status = waiting.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut waiting.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{status} {err}");
    assert_eq!(err.trim(), stopped_following(&id));

    let mut logs = pool.env.cmd();
    logs.args(["--server", &pool.up.url, "tasks", "logs", "-f", &id]);
    let (_, status, err) = interrupt_once_started(logs);
    assert_eq!(status.code(), Some(130), "{status} {err}");
    assert_eq!(err.trim(), stopped_following(&id));
    let task = json(&pool.json_of(&["tasks", "show", &id]));
    assert_eq!(task["state"], "running", "{task:#}");
    pool.cancel(&id);
}

/// Whether process `pid` catches SIGINT (its handler is installed): `SigCgt` of its status.
fn catches_sigint(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (2 - 1)) != 0)
}

/// `tasks wait` interrupted: one line saying the tasks go on and how to wait again, exit 130,
/// and the tasks still run. It prints nothing before it ends, so the interrupt is sent once
/// the process is seen to catch SIGINT.
#[test]
fn interrupting_tasks_wait_says_the_tasks_go_on_and_exits_130() {
    let pool = Pool::start();
    let o = pool.submit("sleep 600", &["-o", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let id = json(&o)["id"].as_str().unwrap().to_string();
    let mut waiting = pool
        .env
        .cmd()
        .args(["--server", &pool.up.url, "tasks", "wait", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_reaped();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !catches_sigint(waiting.id()) {
        assert!(Instant::now() < deadline, "tasks wait never caught SIGINT");
        std::thread::sleep(Duration::from_millis(10));
    }
    signal(&waiting, "INT");
    let status = waiting.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut waiting.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{status} {err}");
    assert_eq!(
        err.trim(),
        format!(
            "agentpool: stopped waiting; the task goes on: `agentpool tasks wait {id}` waits \
             again, `agentpool tasks cancel {id}` stops it"
        )
    );
    let task = json(&pool.json_of(&["tasks", "show", &id]));
    assert!(
        matches!(task["state"].as_str(), Some("queued" | "running")),
        "{task:#}"
    );
    pool.cancel(&id);
}
