//! The chaos suite: a real `agentpool serve` on a private PostgreSQL, several real
//! `agentpool worker` processes, and a burst of command tasks that record each start and end
//! of their run. Meanwhile workers are killed with SIGKILL at pseudo-random moments and started
//! again under the same id, PostgreSQL is restarted once (`pg_ctl restart -m fast`) and the
//! server is killed and restarted once. Then the history checker (`history`) holds the
//! database's record against the commands' own: every task ends exactly once and succeeds,
//! none is lost, none has two successful attempts, no two attempts of a task overlap; the
//! re-executions are reported.
//!
//! Sized for CI by default; the `AGENTPOOL_CHAOS_*` variables give a bigger run by hand (see
//! docs/guarantees.md).

mod history;
mod outage;
mod pg;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use agentpool_client::Client;
use agentpool_core::protocol::TaskDetail;
use agentpool_core::{TaskId, TaskSpec};

use crate::Env;

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A fixed-seed generator (xorshift): the same schedule of kills on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below.max(1)
    }
}

struct Pool<'a> {
    env: &'a Env,
    db: String,
    port: u16,
    admin: String,
    server: Option<Child>,
    workers: Vec<Child>,
    logs: PathBuf,
}

impl Pool<'_> {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(name))
            .expect("log file")
    }

    fn start_server(&mut self) {
        let child = self
            .env
            .cmd()
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--database-url", &self.db, "--allow-local-repos"])
            .args(["--lease-ttl-secs", "4", "--maintenance-secs", "1"])
            .env("AGENTPOOL_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(self.log("server.log"))
            .spawn()
            .expect("spawn serve");
        self.server = Some(child);
        let client = Client::new(&self.url(), Some(self.admin.clone())).expect("client");
        let rt = runtime();
        let deadline = Instant::now() + Duration::from_secs(60);
        while rt.block_on(client.ready()).is_err() {
            assert!(Instant::now() < deadline, "the server did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn spawn_worker(&self, i: usize) -> Child {
        self.env
            .cmd()
            .args(["worker", "--server", &self.url(), "--token", &self.admin])
            .args(["--id", &format!("chaos-{i}"), "--concurrency", "3"])
            .args(["--allow-local-repos", "--heartbeat-secs", "1"])
            .arg("--work-dir")
            .arg(self.env.dir.path().join(format!("work-{i}")))
            .env("AGENTPOOL_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(self.log(&format!("worker-{i}.log")))
            .spawn()
            .expect("spawn worker")
    }
}

impl Drop for Pool<'_> {
    fn drop(&mut self) {
        for c in self.workers.iter_mut().chain(self.server.as_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Submit `specs` in batches, retrying what the server cannot take now (503, connection
/// refused while it restarts); a 500 is a defect.
fn submit_all(client: &Client, specs: Vec<TaskSpec>) -> Vec<TaskId> {
    let rt = runtime();
    let mut ids = Vec::new();
    for chunk in specs.chunks(50) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match rt.block_on(client.submit_batch(chunk.to_vec())) {
                Ok(out) => {
                    ids.extend(out.into_iter().map(|e| e.task.id));
                    break;
                }
                Err(agentpool_client::Error::Unavailable { status, message }) => {
                    assert_ne!(status, Some(500), "submit answered 500: {message}");
                    assert!(Instant::now() < deadline, "submit kept failing: {message}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("submit refused: {e}"),
            }
        }
    }
    ids
}

fn fetch(client: &Client, ids: &[TaskId]) -> BTreeMap<TaskId, TaskDetail> {
    let rt = runtime();
    ids.iter()
        .filter_map(|id| rt.block_on(client.get_task(*id)).ok().map(|d| (*id, d)))
        .collect()
}

fn all_finished(client: &Client, ids: &[TaskId]) -> bool {
    let rt = runtime();
    ids.iter().all(|id| {
        rt.block_on(client.get_task(*id))
            .is_ok_and(|d| d.task.state.is_finished())
    })
}

fn record_command(record: &Path, run_ms: u64) -> String {
    let r = record.display();
    format!(
        "echo \"start $AGENTPOOL_TASK_ID $AGENTPOOL_ATTEMPT\" >> '{r}'; sleep {}; \
         echo \"end $AGENTPOOL_TASK_ID $AGENTPOOL_ATTEMPT\" >> '{r}'",
        run_ms as f64 / 1000.0
    )
}

#[test]
fn chaos_workers_killed_and_restarted_database_and_server_restarted_nothing_lost() {
    let Some(pg) = pg::PrivatePg::start() else {
        assert!(
            !agentpool_testkit::services_required(),
            "PostgreSQL is not installed: run scripts/test"
        );
        return;
    };
    let tasks = setting("AGENTPOOL_CHAOS_TASKS", 150) as usize;
    let n_workers = setting("AGENTPOOL_CHAOS_WORKERS", 3) as usize;
    let kills = setting("AGENTPOOL_CHAOS_KILLS", 8);
    let run_ms = setting("AGENTPOOL_CHAOS_RUN_MS", 400);
    let budget = Duration::from_secs(setting("AGENTPOOL_CHAOS_SECS", 300));

    let env = Env::new();
    let repo = env.sample_repo();
    let record = env.dir.path().join("runs.log");
    let logs = env.dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let db = pg.url();
    let admin = env.create_token(&db, "chaos", "admin");
    let mut pool = Pool {
        env: &env,
        db,
        port: free_port(),
        admin,
        server: None,
        workers: Vec::new(),
        logs: logs.clone(),
    };
    pool.start_server();
    pool.workers = (0..n_workers).map(|i| pool.spawn_worker(i)).collect();
    let client = Client::new(&pool.url(), Some(pool.admin.clone())).expect("client");

    let spec = || {
        let mut s = TaskSpec::command(
            repo.to_str().expect("utf-8 path"),
            &record_command(&record, run_ms),
        );
        s.commit = false;
        s.push = false;
        s.max_attempts = Some(20);
        s
    };
    let mut ids = submit_all(&client, (0..tasks / 2).map(|_| spec()).collect());

    let started = Instant::now();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let pg_restart_at = kills / 3;
    let server_restart_at = 2 * kills / 3;
    for k in 0..kills {
        std::thread::sleep(Duration::from_millis(1000 + rng.next(2000)));
        let i = rng.next(n_workers as u64) as usize;
        let _ = pool.workers[i].kill();
        let _ = pool.workers[i].wait();
        pool.workers[i] = pool.spawn_worker(i);
        if k == pg_restart_at {
            // The second half of the burst is submitted while the database restarts.
            let more: Vec<_> = (tasks / 2..tasks).map(|_| spec()).collect();
            let submitter = std::thread::scope(|s| {
                let h = s.spawn(|| submit_all(&client, more));
                pg.restart();
                h.join().expect("submitter")
            });
            ids.extend(submitter);
        }
        if k == server_restart_at {
            if let Some(mut s) = pool.server.take() {
                let _ = s.kill();
                let _ = s.wait();
            }
            pool.start_server();
        }
    }
    let deadline = started + budget;
    while !all_finished(&client, &ids) {
        assert!(
            Instant::now() < deadline,
            "tasks still unfinished after {budget:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let details = fetch(&client, &ids);
    let runs = history::Runs::parse(&std::fs::read_to_string(&record).unwrap_or_default());
    let report = history::check(&ids, &details, &runs);
    let server_log = std::fs::read_to_string(logs.join("server.log")).unwrap_or_default();
    let internal = server_log.lines().filter(|l| l.contains("store error")).count();
    let worker_logs: String = (0..n_workers)
        .map(|i| std::fs::read_to_string(logs.join(format!("worker-{i}.log"))).unwrap_or_default())
        .collect();
    let abandoned = worker_logs.matches("lease lost; abandoning").count();
    eprintln!(
        "chaos: {} tasks, {} workers, {kills} kills, 1 PostgreSQL restart, 1 server restart in {:?}: \
         {} succeeded, {} needed another attempt, {} commands started again, {} ran to the end \
         again, {abandoned} leases lost while running, {internal} store errors logged",
        report.tasks,
        n_workers,
        started.elapsed(),
        report.succeeded,
        report.retried,
        report.restarted_runs,
        report.repeated_ends,
    );
    assert!(
        report.violations.is_empty(),
        "history violations:\n{}",
        report.violations.join("\n")
    );
    assert_eq!(details.len(), tasks, "every submitted task is in the database");
}
