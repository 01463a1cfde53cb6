//! `agentpool worker --health-listen`: `/readyz` answers 200 once the worker is registered and
//! claiming, and 503 "unhealthy" after git could not be started for three tasks in a row (a
//! readiness probe then takes the pod out of service); `/healthz` stays 200, and `workers list`
//! and `workers show` say why; `--unhealthy-after` and `--recheck-secs` change when that happens
//! and whether the worker checks itself again. The worker's
//! mirror cache shows through the API (`workers show`) and on the probe's `/metrics`, and its
//! counts outlive the worker process.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Env, Reaped, SpawnReaped, Up, assert_stderr_contains, stderr, stdout, terminate};

fn get(url: &str) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::get(url).await.expect("probe answers");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    })
}

/// Poll `url` until it answers `status` (the probe is what is under test; its state changes
/// as the worker registers and fails, which the test cannot await otherwise).
fn until_status(url: &str, status: u16, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (s, body) = get(url);
        if s == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{url} answered {s} {body:?}, waited for {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The lines a worker has written to stderr so far.
type Log = Arc<Mutex<Vec<String>>>;

/// Start a worker command (with `--health-listen`); the process, its probe's base URL, as it
/// prints it, and its stderr lines, which keep being read so the worker never blocks on them.
fn spawn_with_probe(mut cmd: std::process::Command) -> (Reaped, String, Log) {
    let mut worker = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn_reaped();
    let mut lines = BufReader::new(worker.stderr.take().unwrap()).lines();
    let log = Log::default();
    let probe = loop {
        let line = lines
            .next()
            .expect("the worker prints its probe address")
            .unwrap();
        if let Some(u) = line.strip_prefix("health probe on ") {
            break u.trim().to_string();
        }
        log.lock().unwrap().push(line);
    };
    let kept = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            kept.lock().unwrap().push(line);
        }
    });
    (worker, probe, log)
}

#[test]
fn the_worker_probe_turns_unready_when_the_worker_is_unhealthy() {
    let env = Env::new();
    let remote = env.sample_repo();
    let server = Up::spawn(env.serve_cmd());

    // No git on this worker's PATH: every task fails to start with WORKER_ERROR.
    let (mut worker, probe, _) = gitless_worker(&env, &server.url, "probe-1", &[]);

    assert_eq!(until_status(&format!("{probe}/readyz"), 200, 30), "ready\n");
    let task = submit(&env, &server.url, &remote, "echo hi > hi.txt");
    assert_eq!(until_status(&format!("{probe}/readyz"), 503, 60), "unhealthy\n");
    assert_eq!(get(&format!("{probe}/healthz")).0, 200);

    // The server hears it on the next beat, with the reason.
    let why =
        "git or an agent could not be started, and this worker's own check agrees (git cannot be started: ";
    let deadline = Instant::now() + Duration::from_secs(60);
    let shown = loop {
        let o = env.run(&["--server", &server.url, "workers", "show", "probe-1"]);
        let out = stdout(&o);
        if out.contains(why) {
            break out;
        }
        assert!(Instant::now() < deadline, "{out}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let row = shown.lines().find(|l| l.starts_with("why")).unwrap_or_default();
    assert!(row.contains(why) && row.contains("git"), "{shown}");
    let o = env.run(&["--server", &server.url, "workers", "list"]);
    let listed = stdout(&o);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("unhealthy probe-1: ") && l.contains(why)),
        "{listed}"
    );
    // The task it handed back once waits, its attempt given back, not failed: the worker's
    // check found git missing before the task went back, so it did not claim it again.
    let o = env.run(&["--server", &server.url, "tasks", "show", task.trim()]);
    let shown = stdout(&o);
    let given_back = shown
        .lines()
        .filter(|l| l.trim_start().starts_with("#1 given back"))
        .count();
    assert_eq!(given_back, 1, "{shown}");
    assert!(shown.contains("1 that does is unhealthy"), "{shown}");

    terminate(&worker);
    assert!(worker.wait().unwrap().success());
    assert!(server.stop().success());
}

/// Submit `command` on `remote` to the server at `url`; the task's id.
fn submit(env: &Env, url: &str, remote: &std::path::Path, command: &str) -> String {
    let o = env
        .cmd()
        .args(["--server", url, "submit", "--repo"])
        .arg(remote)
        .args(["--command", command])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    stdout(&o).trim().to_string()
}

/// A worker without git, on the server at `url`, with `flags`; the process, its probe and its
/// stderr.
fn gitless_worker(env: &Env, url: &str, id: &str, flags: &[&str]) -> (Reaped, String, Log) {
    let empty = env.dir.path().join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let mut cmd = env.cmd();
    cmd.env("PATH", &empty)
        .args(["worker", "--server", url, "--allow-local-repos"])
        .args(["--id", id, "--health-listen", "127.0.0.1:0"])
        .args(flags);
    spawn_with_probe(cmd)
}

/// `--unhealthy-after 0`: a worker that cannot start git stays ready and keeps claiming (its
/// hand-backs cost the task nothing until they are spent). `--recheck-secs 0`: one that turns
/// unhealthy does not check itself again, and says a restart is needed.
#[test]
fn a_worker_s_flags_say_when_it_turns_unhealthy_and_whether_it_checks_again() {
    let env = Env::new();
    let remote = env.sample_repo();
    let server = Up::spawn(env.serve_cmd());
    let submit = || submit(&env, &server.url, &remote, "true");

    let (mut worker, probe, _) = gitless_worker(&env, &server.url, "never-1", &["--unhealthy-after", "0"]);
    assert_eq!(until_status(&format!("{probe}/readyz"), 200, 30), "ready\n");
    let task = submit();
    // The same worker claims the task again after handing it back: it stayed healthy.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = env.run(&[
            "--server",
            &server.url,
            "--output",
            "json",
            "tasks",
            "show",
            &task,
        ]);
        let shown: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        let mut tried = shown["attempts_detail"].as_array().cloned().unwrap_or_default();
        tried.retain(|a| a["outcome"] != "running");
        if tried.len() >= 2 {
            assert!(
                tried
                    .iter()
                    .all(|a| a["error_class"] == "WORKER_ERROR" && a["worker_id"] == "never-1"),
                "{shown}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{shown}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get(&format!("{probe}/readyz")), (200, "ready\n".to_string()));
    terminate(&worker);
    assert!(worker.wait().unwrap().success());
    let o = env.run(&["--server", &server.url, "tasks", "cancel", &task]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let (mut worker, probe, log) = gitless_worker(&env, &server.url, "once-1", &["--recheck-secs", "0"]);
    assert_eq!(until_status(&format!("{probe}/readyz"), 200, 30), "ready\n");
    submit();
    assert_eq!(until_status(&format!("{probe}/readyz"), 503, 60), "unhealthy\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("it is unhealthy and claims no tasks until it is restarted"))
    {
        assert!(Instant::now() < deadline, "{:#?}", log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    terminate(&worker);
    assert!(worker.wait().unwrap().success());
    assert!(server.stop().success());
}

/// The `cache` a worker shows through the API, polled until it has the figures wanted (the
/// worker sends them on its next heartbeat, which the test cannot await otherwise).
fn until_cache(
    env: &Env,
    url: &str,
    id: &str,
    want: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = env.run(&["--server", url, "--output", "json", "workers", "show", id]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let cache = crate::json(&o)["cache"].clone();
        if want(&cache) {
            return cache;
        }
        assert!(Instant::now() < deadline, "the worker's cache is {cache}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_worker_reports_its_mirror_cache_through_the_api_and_its_probe() {
    let env = Env::new();
    let remote = env.sample_repo();
    let server = Up::spawn(env.serve_cmd());
    let mut cmd = env.cmd();
    cmd.args(["worker", "--server", &server.url, "--allow-local-repos"])
        .args(["--id", "cache-1", "--agents", "command", "--heartbeat-secs", "1"])
        .args(["--health-listen", "127.0.0.1:0"]);
    let (mut worker, probe, _) = spawn_with_probe(cmd);
    until_status(&format!("{probe}/readyz"), 200, 60);

    // Two tasks on one repository, one after the other: the first creates the mirror (a
    // miss), the second fetches into it (a hit).
    let repo = remote.to_str().unwrap();
    for n in ["one", "two"] {
        let o = env.run(&crate::submit_args(
            &server.url,
            repo,
            &format!("echo {n} > {n}.txt"),
            &["--wait"],
        ));
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let cache = until_cache(&env, &server.url, "cache-1", |c| c["hits"] == 1);
    assert_eq!(cache["misses"], 1, "{cache}");
    assert_eq!(cache["mirrors"], 1, "{cache}");
    assert!(cache["bytes"].as_u64().unwrap() > 0, "{cache}");
    let o = env.run(&["--server", &server.url, "workers", "show", "cache-1"]);
    assert!(
        stdout(&o).contains("1 hits, 1 misses, 1 mirrors"),
        "{}",
        stdout(&o)
    );

    let (code, metrics) = get(&format!("{probe}/metrics"));
    assert_eq!(code, 200);
    for line in [
        "agentpool_worker_mirror_cache_hits_total 1",
        "agentpool_worker_mirror_cache_misses_total 1",
        "agentpool_worker_mirror_cache_mirrors 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} not in:\n{metrics}");
    }

    terminate(&worker);
    assert!(worker.wait().unwrap().success());

    // A worker restarted on the same cache goes on from its counts: they are the cache's, not
    // the process's (a pod restarted on its volume keeps the pool's hit rate).
    let mut cmd = env.cmd();
    cmd.args(["worker", "--server", &server.url, "--allow-local-repos"])
        .args(["--id", "cache-2", "--agents", "command", "--heartbeat-secs", "1"])
        .args(["--health-listen", "127.0.0.1:0"]);
    let (mut worker, _probe, _) = spawn_with_probe(cmd);
    let cache = until_cache(&env, &server.url, "cache-2", |c| c["misses"] == 1);
    assert_eq!(
        (&cache["hits"], &cache["mirrors"]),
        (&1.into(), &1.into()),
        "{cache}"
    );
    let o = env.run(&crate::submit_args(
        &server.url,
        repo,
        "echo three > three.txt",
        &["--wait"],
    ));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let cache = until_cache(&env, &server.url, "cache-2", |c| c["hits"] == 2);
    assert_eq!(cache["misses"], 1, "{cache}");

    terminate(&worker);
    assert!(worker.wait().unwrap().success());
    assert!(server.stop().success());
}

/// A worker offers only the agents it can start: one named with `--agents` whose CLI is not
/// installed is left out, with a warning, so that its tasks wait for a worker that has it
/// (and say so) instead of being handed back here, which would also make this worker
/// unhealthy for the agents it does have.
#[test]
fn a_worker_leaves_out_a_named_agent_that_is_not_installed_and_says_so() {
    let env = Env::new();
    let remote = env.sample_repo();
    let server = Up::spawn(env.serve_cmd());
    let bin = env.dir.path().join("bin");
    agentpool_testkit::process::script(&bin, "claude", "#!/bin/sh\nexit 0\n");
    let mut cmd = env.cmd();
    cmd.env("AGENTPOOL_AGENT_BIN_DIR", &bin)
        .env("PATH", "/usr/bin:/bin")
        .args(["worker", "--server", &server.url, "--allow-local-repos"])
        .args(["--id", "offers-1", "--agents", "claude-code,codex"])
        .args(["--health-listen", "127.0.0.1:0"]);
    let (mut worker, probe, log) = spawn_with_probe(cmd);
    let before = log.lock().unwrap().clone();
    assert!(
        before.iter().any(|l| l.contains(
            "agent codex is not installed here (its CLI is not found, or not executable, in \
             AGENTPOOL_AGENT_BIN_DIR or on PATH): this worker does not offer it"
        )),
        "{before:#?}"
    );
    assert_eq!(until_status(&format!("{probe}/readyz"), 200, 30), "ready\n");
    let o = env.run(&[
        "--server",
        &server.url,
        "--output",
        "json",
        "workers",
        "show",
        "offers-1",
    ]);
    let shown: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let agents: Vec<&str> = shown["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(agents, ["command", "claude-code"]);

    // A codex task waits, saying why, and the worker stays ready.
    let o = env
        .cmd()
        .args(["--server", &server.url, "submit", "--repo"])
        .arg(&remote)
        .args(["--agent", "codex", "fix it"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_stderr_contains(&o, "no worker online offers agent codex");
    assert_eq!(get(&format!("{probe}/readyz")).0, 200);

    terminate(&worker);
    assert!(worker.wait().unwrap().success());
    assert!(server.stop().success());
}
