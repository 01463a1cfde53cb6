//! Operating a pool through the binary: the lease and heartbeat flags of `serve` and `worker`,
//! and a worker killed and restarted under its id, whose previous attempt is released at once;
//! a follower that outlives a restart of the server.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Env, Reaped, SpawnReaped, Up, assert_exit, json, stdout, submit_args};

fn sqlite_db(env: &Env) -> String {
    format!("sqlite://{}?mode=rwc", env.dir.path().join("prod.db").display())
}

fn spawn_worker(env: &Env, url: &str, token: &str, id: Option<&str>) -> Reaped {
    spawn_worker_with_stderr(env, url, token, id, Stdio::null())
}

/// `agentpool worker` (id `id`, or the one kept in its work dir; heartbeats every second,
/// command tasks, labelled `site=here`) with its stderr. Configured as a container would be,
/// through the environment.
fn spawn_worker_with_stderr(env: &Env, url: &str, token: &str, id: Option<&str>, stderr: Stdio) -> Reaped {
    env.cmd()
        .args(["worker", "--server", url, "--token", token])
        .args(id.map(|id| ["--id", id]).into_iter().flatten())
        .env("AGENTPOOL_ALLOW_LOCAL_REPOS", "true")
        .env("AGENTPOOL_HEARTBEAT_SECS", "1")
        .env("AGENTPOOL_AGENTS", "command")
        .env("AGENTPOOL_LABELS", "site=here")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn_reaped()
}

fn task(env: &Env, url: &str, token: &str, id: &str) -> serde_json::Value {
    let o = env.run(&[
        "--server", url, "--token", token, "tasks", "show", id, "--output", "json",
    ]);
    assert_exit(&o, 0);
    json(&o)
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Poll `f` until it gives a value; on timeout, fail with what its last `Err` said was seen.
fn wait_for_value<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match f() {
            Ok(v) => return v,
            Err(seen) => assert!(Instant::now() < deadline, "timed out waiting for {what}; {seen}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `serve` with auth on a new SQLite database, local repositories allowed, and `extra` flags:
/// the server, an admin token, and a sample repository.
pub(crate) fn start_pool(env: &Env, extra: &[&str]) -> (Up, String, std::path::PathBuf) {
    let (serve, admin, remote) = serve_cmd(env, extra);
    (Up::spawn(serve), admin, remote)
}

/// `serve` as [`start_pool`] starts it, not yet started.
fn serve_cmd(env: &Env, extra: &[&str]) -> (Command, String, std::path::PathBuf) {
    let remote = env.sample_repo();
    let db = sqlite_db(env);
    let admin = env.create_token(&db, "root", "admin");
    let mut serve = env.cmd();
    serve
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--allow-local-repos",
            "--database-url",
            &db,
        ])
        .args(extra);
    (serve, admin, remote)
}

fn submit(env: &Env, url: &str, token: &str, repo: &std::path::Path, cmd: &str) -> String {
    let repo = repo.to_str().unwrap();
    let extra = ["--token", token, "--max-attempts", "5"];
    let o = env.run(&submit_args(url, repo, cmd, &extra));
    assert_exit(&o, 0);
    stdout(&o).trim().to_string()
}

/// `serve --lease-ttl-secs 5` with `worker --heartbeat-secs 1`: the heartbeats keep the lease
/// past its TTL, and once the worker is killed the task is re-queued within seconds.
#[test]
fn short_leases_are_kept_by_heartbeats_and_expire_fast_when_the_worker_dies() {
    let env = Env::new();
    let (server, admin, repo) = start_pool(&env, &["--lease-ttl-secs", "5", "--maintenance-secs", "1"]);
    let url = server.url.clone();
    let id = submit(&env, &url, &admin, &repo, "sleep 1000");
    let mut w = spawn_worker(&env, &url, &admin, Some("w1"));
    wait_for("the task to run", Duration::from_secs(60), || {
        task(&env, &url, &admin, &id)["state"] == "running"
    });
    // Nothing to await here: the point is that nothing happens for longer than the TTL.
    std::thread::sleep(Duration::from_secs(7));
    let t = task(&env, &url, &admin, &id);
    assert_eq!(
        (t["state"].as_str(), t["attempts"].as_u64()),
        (Some("running"), Some(1)),
        "{t}"
    );
    w.kill().unwrap();
    w.wait().unwrap();
    wait_for("the lease to expire", Duration::from_secs(20), || {
        task(&env, &url, &admin, &id)["state"] == "queued"
    });
    // Nor is the worker shown busy much longer: silent for a lease TTL, it is offline.
    wait_for("the worker to be offline", Duration::from_secs(20), || {
        let o = env.run(&[
            "--server", &url, "--token", &admin, "workers", "list", "-o", "json",
        ]);
        json(&o)[0]["status"] == "offline"
    });
    drop(server);
}

/// A worker whose token is revoked while it runs a task stops, in one line and with exit
/// code 4, instead of retrying refused calls forever; it stops the task, whose lease then
/// expires on the server, so the task is queued to run again elsewhere.
#[test]
fn a_worker_whose_token_is_revoked_stops_and_its_task_runs_again() {
    let env = Env::new();
    let (server, admin, repo) = start_pool(&env, &["--lease-ttl-secs", "5", "--maintenance-secs", "1"]);
    let url = server.url.clone();
    // Through the server, not the database file: a second process opening the file of a
    // running server has made one of its reads fail (SQLITE_IOERR_SHORT_READ).
    let o = env.run(&[
        "--server", &url, "--token", &admin, "tokens", "create", "pool", "--role", "worker",
    ]);
    assert_exit(&o, 0);
    let pool = stdout(&o).trim().to_string();
    assert!(pool.starts_with("apt_"), "{pool}");
    let id = submit(&env, &url, &admin, &repo, "sleep 1000");
    let mut w = spawn_worker_with_stderr(&env, &url, &pool, Some("w1"), Stdio::piped());
    wait_for("the task to run", Duration::from_secs(60), || {
        task(&env, &url, &admin, &id)["state"] == "running"
    });
    let o = env.run(&[
        "--server", &url, "--token", &admin, "tokens", "list", "--output", "json",
    ]);
    let tokens = json(&o);
    let pool_id = tokens
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == "pool"))
        .and_then(|t| t["id"].as_str())
        .expect("the worker's token")
        .to_string();
    let o = env.run(&["--server", &url, "--token", &admin, "tokens", "revoke", &pool_id]);
    assert_exit(&o, 0);
    let mut status = None;
    wait_for("the worker to stop", Duration::from_secs(60), || {
        status = w.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(status.and_then(|s| s.code()), Some(4), "{status:?}");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut w.stderr.take().unwrap(), &mut err).unwrap();
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(
            "agentpool: the server no longer accepts this worker's token (unknown or revoked token)"
        ),
        "{err}"
    );
    wait_for("the lease to expire", Duration::from_secs(30), || {
        task(&env, &url, &admin, &id)["state"] == "queued"
    });
    drop(server);
}

/// With a 10-minute lease, a worker killed with SIGKILL and started again under its id gets
/// its task back at once instead of after the lease.
#[test]
fn a_worker_restarted_under_its_id_releases_its_previous_attempt_at_once() {
    restarted_worker_releases_its_previous_attempt_at_once(Some("w1"));
}

/// The same without `--id`: the worker keeps the id it made on its first start in its work
/// dir, so its second life is the same worker (one in the list, not a new one and an offline
/// one).
#[test]
fn a_worker_restarted_without_an_id_keeps_its_id_and_releases_its_previous_attempt_at_once() {
    restarted_worker_releases_its_previous_attempt_at_once(None);
}

fn restarted_worker_releases_its_previous_attempt_at_once(worker_id: Option<&str>) {
    let env = Env::new();
    let (serve, admin, repo) = serve_cmd(&env, &["--lease-ttl-secs", "600"]);
    let (server, server_log) = Up::spawn_watching_stderr(serve);
    let url = server.url.clone();
    let id = submit(&env, &url, &admin, &repo, "sleep 1000");
    // Both lives log to one file, shown if the task does not come back.
    let logs = env.dir.path().join("worker.log");
    let log = || {
        Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&logs)
                .unwrap(),
        )
    };
    let mut w = spawn_worker_with_stderr(&env, &url, &admin, worker_id, log());
    wait_for("the task to run", Duration::from_secs(60), || {
        task(&env, &url, &admin, &id)["state"] == "running"
    });
    w.kill().unwrap();
    w.wait().unwrap();
    let mut again = spawn_worker_with_stderr(&env, &url, &admin, worker_id, log());
    // Released at registration (without it, the lease would hold the task for 10 minutes),
    // its attempt given back (the worker died, not the task), and run again on the new life.
    let t = wait_for_value("the second run", Duration::from_secs(120), || {
        let t = task(&env, &url, &admin, &id);
        if t["state"] == "running" && t["attempts_detail"].as_array().map(Vec::len) == Some(2) {
            return Ok(t);
        }
        let log = std::fs::read_to_string(&logs).unwrap_or_default();
        Err(format!("the task: {t:#}\nthe workers' log:\n{log}"))
    });
    let first = &t["attempts_detail"][0];
    assert_eq!(first["error_class"], "LEASE_EXPIRED", "{t}");
    // The server's log says whose attempt ended, and why (its reader passes lines on).
    let mut said = Vec::new();
    let found = std::iter::from_fn(|| server_log.recv_timeout(Duration::from_secs(10)).ok())
        .inspect(|l| said.push(l.clone()))
        .any(|l| l.contains("the worker started again under its id") && l.contains(&id));
    assert!(found, "{said:#?}");
    assert_eq!(t["attempts"], 1, "{t}");
    // Both runs were one worker's, the only one the server knows.
    let worker = &t["attempts_detail"][1]["worker_id"];
    assert_eq!(&first["worker_id"], worker, "{t}");
    if let Some(given) = worker_id {
        assert_eq!(worker, given);
    }
    let o = env.run(&[
        "--server", &url, "--token", &admin, "workers", "list", "-o", "json",
    ]);
    assert_exit(&o, 0);
    let workers = json(&o);
    let ids: Vec<_> = workers.as_array().unwrap().iter().map(|w| &w["id"]).collect();
    assert_eq!(ids, [worker], "{workers:#}");
    // Its own label, and the one of a worker that reads local repositories (--allow-local-repos).
    assert_eq!(
        workers[0]["labels"],
        serde_json::json!({"site": "here", "agentpool/local-repos": "true"})
    );
    assert_eq!(workers[0]["agents"][0]["name"], "command", "{workers:#}");
    assert_eq!(
        workers[0]["agents"].as_array().map(Vec::len),
        Some(1),
        "{workers:#}"
    );
    let _ = again.kill();
    let _ = again.wait();
    drop(server);
}

/// The server is killed and started again while `tasks logs -f` follows a task: the follower
/// says it lost the server, keeps trying, and follows the task to its end once the server is
/// back — a rolling restart does not fail the scripts waiting on tasks (`submit --wait` and
/// `tasks wait` follow the same way).
#[test]
fn a_follower_outlives_a_restart_of_the_server() {
    let env = Env::new();
    let (mut server, admin, repo) = start_pool(&env, &[]);
    let url = server.url.clone();
    let go = env.dir.path().join("go");
    let cmd = format!(
        "while [ ! -e '{}' ]; do sleep 0.1; done; echo x > x.txt",
        go.display()
    );
    let id = submit(&env, &url, &admin, &repo, &cmd);
    let mut w = spawn_worker(&env, &url, &admin, Some("w1"));
    let mut follower = env
        .cmd()
        .args(["--server", &url, "--token", &admin, "tasks", "logs", "-f", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_reaped();
    let mut shown = BufReader::new(follower.stdout.take().unwrap()).lines();
    let mut said = BufReader::new(follower.stderr.take().unwrap()).lines();
    // The events shown up to the command's start: the follower has reached the server, and the
    // worker holds the task and waits, quiet. Killing the server earlier could cut a claim
    // after its commit and before its answer: the worker would never hear of the task, and
    // the lease would expire and be claimed again (a second "claimed: attempt 1"), which is
    // the lease rescue working, not what this test is about.
    let mut before = Vec::new();
    for line in shown.by_ref() {
        let line = line.unwrap();
        let started = line.contains("agent started");
        before.push(line);
        if started {
            break;
        }
    }
    assert!(before[0].contains("queued"), "{before:?}");

    crate::signal(&server.child, "KILL");
    server.child.wait().unwrap();
    std::mem::forget(server);
    // Past what it said of why the task waited (queued before the worker registered).
    let lost = said
        .by_ref()
        .map(|l| l.unwrap())
        .find(|l| !l.starts_with("waiting: "))
        .expect("a line on stderr");
    assert!(lost.starts_with("agentpool: lost the server ("), "{lost}");
    assert_eq!(follower.try_wait().unwrap(), None, "the follower gave up: {lost}");

    let listen = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut serve = env.cmd();
    serve.args([
        "serve",
        "--listen",
        &listen,
        "--allow-local-repos",
        "--database-url",
        &sqlite_db(&env),
    ]);
    let again = Up::spawn(serve);
    std::fs::write(&go, "").unwrap();
    let status = follower.wait().unwrap();
    let events: Vec<String> = shown.map_while(Result::ok).collect();
    let rest: Vec<String> = said.map_while(Result::ok).collect();
    assert_eq!(status.code(), Some(0), "{events:?}\n{rest:?}");
    assert!(events.iter().any(|l| l.contains("succeeded")), "{events:?}");
    assert!(
        rest.iter().any(|l| l == "agentpool: reached the server again"),
        "{rest:?}"
    );
    // Each event once: the follower went on from the last one it had shown.
    let mut all = before;
    all.extend(events.iter().cloned());
    let unique: std::collections::BTreeSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "{all:?}");
    assert_eq!(
        all.iter().filter(|l| l.contains("claimed: attempt 1")).count(),
        1,
        "{all:?}"
    );
    let _ = w.kill();
    let _ = w.wait();
    drop(again);
}
