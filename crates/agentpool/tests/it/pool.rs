//! `up`, `tasks logs -f` and the worker commands against a running embedded pool.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use crate::{Env, SpawnReaped, Up, json, signal, stderr, stdout, submit_args};

/// A TCP proxy in front of `upstream` (`http://host:port`) that keeps every byte clients sent,
/// so a test can count the HTTP requests a command made.
struct CountingProxy {
    url: String,
    sent: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Connections accepted and not yet closed by their client.
    open: Arc<AtomicUsize>,
}

impl CountingProxy {
    fn start(upstream: &str) -> Self {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let sent: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let open: Arc<AtomicUsize> = Arc::default();
        let log = sent.clone();
        let counter = open.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                counter.fetch_add(1, Ordering::SeqCst);
                let done = counter.clone();
                let Ok(mut server) = TcpStream::connect(&upstream) else {
                    return;
                };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = client.read(&mut buf) {
                        if n == 0 || server.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        seen.extend_from_slice(&buf[..n]);
                    }
                    let _ = server.shutdown(Shutdown::Write);
                    log.lock().unwrap().push(seen);
                    done.fetch_sub(1, Ordering::SeqCst);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(Shutdown::Write);
                });
            }
        });
        Self { url, sent, open }
    }

    /// Request lines (`GET /path`) the clients sent, once every connection has closed (call it
    /// after the client process exited).
    fn requests(&self) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.open.load(Ordering::SeqCst) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "proxied connections stay open"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let sent = self.sent.lock().unwrap();
        sent.iter()
            .flat_map(|c| {
                String::from_utf8_lossy(c)
                    .lines()
                    .filter(|l| l.ends_with(" HTTP/1.1"))
                    .map(|l| l.trim_end_matches(" HTTP/1.1").to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// `logs -f` shows a running task live and ends with it — following its events only: the
/// stream ends after the terminal event, and the task itself is read at the end (and once
/// while it is queued, to say why it waits), however long it runs (no polling of
/// `GET /v1/tasks/{id}`).
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
    let sub = env.run(&submit_args(&up.url, remote.to_str().unwrap(), &command, &[]));
    assert_eq!(sub.status.code(), Some(0), "{}", stderr(&sub));
    let id = stdout(&sub).trim().to_string();

    let proxy = CountingProxy::start(&up.url);
    let mut logs = env
        .cmd()
        .args(["--server", &proxy.url, "tasks", "logs", "-f", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_reaped();
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
    // Long enough for a follower that polls the task (every ~2 s) to have done so.
    std::thread::sleep(std::time::Duration::from_secs(5));
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
    let reads: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /v1/tasks/") && !r["GET /v1/tasks/".len()..].contains(['/', '?']))
        .collect();
    // At most once when the follower finds it queued (to say why it waits), and once at the
    // end: a follower that polled would have read it every ~2 s of the gate's 5 s.
    assert!(reads.len() <= 2, "the follower polled the task: {reads:?}");
    assert!(
        proxy.requests().iter().any(|r| r.contains("/events/stream")),
        "{:?}",
        proxy.requests()
    );
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
fn up_s_workers_carry_its_labels_and_run_the_tasks_that_ask_for_them() {
    let env = Env::new();
    let remote = env.sample_repo();
    let up = Up::spawn(env.up_cmd(1, &["--labels", "gpu=yes"]));
    let workers = json(&env.run(&["workers", "list", "--output", "json"]));
    assert_eq!(workers[0]["labels"]["gpu"], "yes", "{workers}");
    let o = env.run(&[
        "submit",
        "--repo",
        remote.to_str().unwrap(),
        "--label",
        "gpu=yes",
        "--wait",
        "--command",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(up.stop().success());
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

/// Ctrl-C drains `up`: running tasks get the drain grace (60 s) to finish. A second Ctrl-C
/// stops them at once and hands them back to the queue: nobody canceled them, so the next
/// pool runs them again.
#[test]
fn a_second_interrupt_stops_running_tasks_now_and_hands_them_back() {
    let env = Env::new();
    let remote = env.sample_repo();
    let (mut up, lines) = Up::spawn_watching_stderr(env.up_cmd(1, &[]));
    let o = env.run(&submit_args(
        &up.url,
        remote.to_str().unwrap(),
        "exec sleep 600",
        &["-o", "json"],
    ));
    let id = json(&o)["id"].as_str().unwrap().to_string();
    let show = |url: &str| json(&env.run(&["--server", url, "-o", "json", "tasks", "show", &id]));
    let deadline = Instant::now() + Duration::from_secs(60);
    while show(&up.url)["state"] != "running" {
        assert!(Instant::now() < deadline, "the task never started");
        std::thread::sleep(Duration::from_millis(50));
    }

    signal(&up.child, "INT");
    let said = |what: &str| loop {
        match lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.contains(what) => break line,
            Ok(_) => {}
            Err(_) => panic!("up never said {what:?}"),
        }
    };
    assert!(said("draining").contains("Ctrl-C again"));
    let interrupted = Instant::now();
    signal(&up.child, "INT");
    said("stopping running tasks now");
    let status = up.child.wait().unwrap();
    // Without the second Ctrl-C, `up` would wait out the whole 60 s grace.
    assert!(
        interrupted.elapsed() < Duration::from_secs(45),
        "{:?}",
        interrupted.elapsed()
    );
    assert!(status.success(), "{status}");
    // Exited and reaped: nothing left for its drop to stop.
    std::mem::forget(up);

    let again = Up::start(&env, 0);
    let task = show(&again.url);
    assert_eq!(task["state"], "queued", "{task:#}");
    assert_eq!(task["error_class"], "INFRA_ERROR", "{task:#}");
    assert_eq!(
        task["attempts_detail"][0]["error_class"], "INFRA_ERROR",
        "{task:#}"
    );
}
