//! `agentpool worker --health-listen`: `/readyz` answers 200 once the worker is registered and
//! claiming, and 503 "unhealthy" after git could not be started for three tasks in a row (a
//! readiness probe then takes the pod out of service); `/healthz` stays 200.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::{Env, Up, stderr, terminate};

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

#[test]
fn the_worker_probe_turns_unready_when_the_worker_is_unhealthy() {
    let env = Env::new();
    let remote = env.sample_repo();
    let server = Up::spawn(env.serve_cmd());

    // No git on this worker's PATH: every task fails to start with WORKER_ERROR.
    let empty = env.dir.path().join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let mut worker = env
        .cmd()
        .env("PATH", &empty)
        .args(["worker", "--server", &server.url, "--allow-local-repos"])
        .args(["--id", "probe-1", "--health-listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(worker.stderr.take().unwrap()).lines();
    let probe = loop {
        let line = lines
            .next()
            .expect("the worker prints its probe address")
            .unwrap();
        if let Some(u) = line.strip_prefix("health probe on ") {
            break u.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});

    assert_eq!(until_status(&format!("{probe}/readyz"), 200, 30), "ready\n");
    let o = env
        .cmd()
        .args(["--server", &server.url, "submit", "--repo"])
        .arg(&remote)
        .args(["--command", "echo hi > hi.txt"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(until_status(&format!("{probe}/readyz"), 503, 60), "unhealthy\n");
    assert_eq!(get(&format!("{probe}/healthz")).0, 200);

    terminate(&worker);
    assert!(worker.wait().unwrap().success());
    assert!(server.stop().success());
}
