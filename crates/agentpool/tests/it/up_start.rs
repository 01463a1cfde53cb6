//! `up`'s start: one pool per data dir however they are started, nothing left running by the
//! workers of a pool that was killed, a database that refuses writes, a signal during start,
//! and the config file's settings it does not use.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{Env, Reaped, SpawnReaped, Up, assert_exit, signal, stderr, stdout, submit_args};

/// Wait (polling, up to `limit`) until `done` holds.
fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `http://…` word of a line, if any.
fn url_in(line: &str) -> Option<String> {
    line.split_whitespace()
        .find(|w| w.starts_with("http://"))
        .map(str::to_string)
}

/// Two `up`s started at the same moment on one data dir: one runs, the other is refused at
/// once, in one line naming the one that runs, with the exit code of the refusal of an `up`
/// started later (1).
#[test]
fn of_two_ups_started_at_once_on_one_data_dir_only_one_runs() {
    let env = Env::new();
    let spawn = || {
        env.up_cmd(1, &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn_reaped()
    };
    let mut both = [spawn(), spawn()];
    let (tx, urls) = mpsc::channel();
    for (i, up) in both.iter_mut().enumerate() {
        let out = up.stdout.take().unwrap();
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(out).lines().map_while(Result::ok);
            let _ = tx.send((i, lines.by_ref().find_map(|l| url_in(&l))));
            // Keep reading: a pool whose stdout closed would end.
            for _ in lines {}
        });
    }
    let mut seen = [None, None];
    for _ in 0..2 {
        let (i, url) = urls
            .recv_timeout(Duration::from_secs(120))
            .expect("both ups to announce their URL or exit");
        seen[i] = Some(url);
    }
    let runs: Vec<usize> = (0..2).filter(|i| seen[*i].as_ref().unwrap().is_some()).collect();
    assert_eq!(runs.len(), 1, "both ups run: {seen:?}");
    let (winner, loser) = (runs[0], 1 - runs[0]);
    let status = both[loser].wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut both[loser].stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    let line = err.trim();
    assert!(!line.contains('\n'), "{err}");
    let data_dir = env.data_dir();
    let pid = both[winner].id();
    assert!(
        line.starts_with(&format!(
            "agentpool: an embedded pool already runs for {}",
            data_dir.display()
        )) && line.contains(&format!("(pid {pid}")),
        "{err}"
    );
    signal(&both[winner], "TERM");
    assert!(both[winner].wait().unwrap().success());
}

/// Whether process `pid` has ended (gone, or a zombie nobody reaped yet).
fn ended(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// `up` killed with SIGKILL while each of its two workers runs a command, then started again
/// with one worker: the command of the worker it no longer starts is killed too, not left
/// running (and run a second time once its lease expires).
#[test]
fn up_restarted_with_fewer_workers_leaves_no_command_of_the_others_running() {
    let env = Env::new();
    let remote = env.sample_repo();
    let mut up = Up::spawn(env.up_cmd(2, &["--concurrency", "1"]));
    let pid_file = |i: usize| env.dir.path().join(format!("task-{i}.pid"));
    let ids: Vec<String> = (0..2)
        .map(|i| {
            let p = pid_file(i);
            // Written aside and renamed, so a pid read is whole.
            let command = format!(
                "echo $$ > {p}.new && mv {p}.new {p}; exec sleep 600",
                p = p.display()
            );
            let o = env.run(&submit_args(&up.url, remote.to_str().unwrap(), &command, &[]));
            assert_exit(&o, 0);
            stdout(&o).trim().to_string()
        })
        .collect();
    wait_until("both commands to run", Duration::from_secs(60), || {
        (0..2).all(|i| pid_file(i).exists())
    });
    let pids: Vec<String> = (0..2)
        .map(|i| std::fs::read_to_string(pid_file(i)).unwrap().trim().to_string())
        .collect();
    signal(&up.child, "KILL");
    up.child.wait().unwrap();
    std::mem::forget(up);
    assert!(pids.iter().all(|p| !ended(p)), "{pids:?}");

    let again = Up::start(&env, 1);
    // SIGKILL is sent before the pool announces itself; its delivery is not awaited.
    wait_until(
        "the commands of the killed pool to end",
        Duration::from_secs(10),
        || pids.iter().all(|p| ended(p)),
    );
    for id in &ids {
        let o = env.run(&["--server", &again.url, "tasks", "cancel", id]);
        assert_exit(&o, 0);
    }
    assert!(again.stop().success());
}

/// `up` on a database that refuses writes fails at once, in one line, instead of retrying
/// its workers' registrations for minutes.
#[test]
fn up_on_a_read_only_database_fails_at_once_in_one_line() {
    let env = Env::new();
    let db = env.dir.path().join("ro.db");
    let o = env.run(&[
        "migrate",
        "--database-url",
        &format!("sqlite://{}?mode=rwc", db.display()),
    ]);
    assert_exit(&o, 0);
    let started = Instant::now();
    let o = env.run(&[
        "up",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--database-url",
        &format!("sqlite://{}?mode=ro", db.display()),
    ]);
    assert_exit(&o, 1);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let err = stderr(&o);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("agentpool: the database sqlite://") && last.contains("refuses writes"),
        "{err}"
    );
    // Said once, not once per registration attempt.
    assert_eq!(err.matches("readonly database").count(), 1, "{err}");
}

/// An agent CLI that never answers its version probe, marking `mark` when asked: `up` is then
/// starting for as long as the probe's budget.
fn slow_agent(bin: &Path, mark: &Path) {
    agentpool_testkit::process::script(
        bin,
        "claude",
        &format!("#!/bin/sh\ntouch '{}'\nexec sleep 30\n", mark.display()),
    );
}

/// An `up` held while it starts: its agent's version probe has begun (after the data dir's
/// lock is taken, before the pool says where it listens) and lasts 30 s.
fn up_held_in_its_probe(env: &Env, its_stderr: Stdio) -> Reaped {
    let bin = env.dir.path().join("bin");
    let mark = env.dir.path().join("probed");
    slow_agent(&bin, &mark);
    let up = env
        .up_cmd(1, &["--agents", "claude-code"])
        .env("AGENTPOOL_AGENT_BIN_DIR", &bin)
        .stdout(Stdio::piped())
        .stderr(its_stderr)
        .spawn_reaped();
    wait_until("the agent's version probe", Duration::from_secs(60), || {
        mark.exists()
    });
    up
}

/// Ctrl-C while `up` starts stops it there: it exits without ever announcing a pool.
#[test]
fn an_interrupt_while_up_starts_stops_it_before_it_is_up() {
    let env = Env::new();
    let mut up = up_held_in_its_probe(&env, Stdio::piped());
    signal(&up, "INT");
    let status = up.wait().unwrap();
    let (mut shown, mut said) = (String::new(), String::new());
    std::io::Read::read_to_string(&mut up.stdout.take().unwrap(), &mut shown).unwrap();
    std::io::Read::read_to_string(&mut up.stderr.take().unwrap(), &mut said).unwrap();
    assert!(url_in(&shown).is_none(), "it came up: {shown}\n{said}");
    assert!(status.success(), "{status}: {said}");
    assert!(said.contains("stopped before the pool was up"), "{said}");
}

/// A command run while `up` is still starting (`agentpool up &` and at once the next line of a
/// script) waits for it and runs on it, instead of finding no server.
#[test]
fn a_command_run_while_up_starts_waits_for_it() {
    let env = Env::new();
    // While the probe lasts, the pool is starting.
    let mut up = up_held_in_its_probe(&env, Stdio::null());
    assert!(
        !env.data_dir().join("up.json").exists(),
        "the pool said where it listens before its probe ended"
    );
    let o = env.run(&["--output", "json", "tasks", "list"]);
    assert_exit(&o, 0);
    assert!(env.data_dir().join("up.json").exists());
    signal(&up, "INT");
    assert!(up.wait().unwrap().success());
}

/// A config file's setting that `up` has no flag for (it is `serve`'s) is not logged as read
/// for `up`: the log line says `up` does not use it.
#[test]
fn up_s_log_says_which_settings_of_the_config_file_it_does_not_use() {
    let env = Env::new();
    std::fs::create_dir_all(env.data_dir()).unwrap();
    std::fs::write(
        env.data_dir().join("config.json"),
        r#"{"lease_ttl_secs": 5, "workers": 1}"#,
    )
    .unwrap();
    let mut cmd = env.cmd();
    cmd.env("AGENTPOOL_LOG", "info")
        .args(["up", "--listen", "127.0.0.1:0"]);
    let (up, lines) = Up::spawn_watching_stderr(cmd);
    // Logged before the URL is printed; its reader may not have passed it on yet.
    let line = std::iter::from_fn(|| lines.recv_timeout(Duration::from_secs(10)).ok())
        .find(|l| l.contains("settings read from the config file"))
        .expect("the config file's log line");
    assert!(
        line.contains("`up` does not use lease_ttl_secs") && line.contains("settings=workers"),
        "{line}"
    );
    assert!(up.stop().success());
}

/// Transient `run`s share a data dir (three at once each run their task), and an `up` started
/// while they run is refused at once rather than run beside them.
#[test]
fn transient_runs_share_a_data_dir_and_an_up_waits_for_them() {
    let env = Env::new();
    let remote = env.sample_repo();
    // The database exists already: the first start of a pool creates it.
    assert_exit(&env.run(&["migrate"]), 0);
    let gate = env.dir.path().join("gate");
    let started = |i: usize| env.dir.path().join(format!("started-{i}"));
    let runs: Vec<_> = (0..3)
        .map(|i| {
            let command = format!(
                "touch {}; while [ ! -e {} ]; do sleep 0.05; done",
                started(i).display(),
                gate.display()
            );
            // Without agent CLIs: each pool would probe every one installed (a Node.js start
            // each) before it takes a task, three pools at once, and the test runs commands.
            env.cmd_without_agents()
                .args(["run", "--repo", remote.to_str().unwrap(), "--command", &command])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn_reaped()
        })
        .collect();
    let mut runs = runs;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(0..3).all(|i| started(i).exists()) {
        if Instant::now() > deadline {
            // What each run said, to tell why its task did not start.
            let said: Vec<String> = runs
                .iter_mut()
                .map(|r| {
                    crate::signal(r, "KILL");
                    let _ = r.wait();
                    let mut err = String::new();
                    let _ = std::io::Read::read_to_string(&mut r.stderr.take().unwrap(), &mut err);
                    err
                })
                .collect();
            panic!("timed out waiting for the three tasks to run: {said:#?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = env.run(&["up", "--listen", "127.0.0.1:0", "--workers", "1"]);
    assert_exit(&o, 1);
    assert_eq!(
        stderr(&o).trim(),
        format!(
            "agentpool: a transient `agentpool run` uses {}: start `agentpool up` once it has ended",
            env.data_dir().display()
        )
    );
    std::fs::write(&gate, "").unwrap();
    for mut run in runs {
        let status = run.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut run.stderr.take().unwrap(), &mut err).unwrap();
        assert!(status.success(), "{status}: {err}");
    }
}
