//! A worker process killed with SIGKILL mid-task: after its lease expires, another worker
//! runs the task to success and exactly one success is recorded; and a worker restarted in the
//! same directory first kills what its previous life left running: a command, or git.

use std::sync::Arc;
use std::time::Duration;

use agentpool_core::AttemptOutcome;
use agentpool_store::Store;
use agentpool_testkit::db::TestDb;

use crate::worker::{
    TOKEN, alive, api, assert_succeeded, command, config, env, finished, gate, pids, start, until, wait_log,
};

fn spawn_worker(server: &str, dir: &std::path::Path, id: &str) -> tokio::process::Child {
    worker_command(server, dir, id).spawn().unwrap()
}

fn worker_command(server: &str, dir: &std::path::Path, id: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentpool-test-worker"));
    c.env("AGENTPOOL_TEST_SERVER", server)
        .env("AGENTPOOL_TEST_DIR", dir)
        .env("AGENTPOOL_TEST_WORKER", id)
        .env("AGENTPOOL_TEST_GIT_TOKEN", TOKEN)
        .kill_on_drop(true);
    c
}

/// A store of its own (and its database) with a real server on it whose leases last a second,
/// for the worker processes to use: the server's URL.
async fn short_leases() -> (TestDb, Arc<dyn Store>, String) {
    let db = TestDb::sqlite();
    let store = agentpool_store::open_store(db.url()).await.unwrap();
    let server = agentpool_server::serve_loopback(store.clone(), Duration::from_secs(1));
    let url = server.await.unwrap().url();
    (db, store, url)
}

#[tokio::test]
async fn a_worker_killed_mid_task_is_replaced_and_the_task_succeeds_once() {
    let env = env().await;
    let (_db, store, url) = short_leases().await;
    let (gate, wait) = gate(&env);
    let cmd = format!("echo ready; {wait}; echo \"$AGENTPOOL_ATTEMPT\" > attempt.txt");
    let task = store.enqueue(command(&env, &cmd)).await.unwrap().task;

    let mut victim = spawn_worker(&url, &env.dir.path().join("victim"), "victim");
    wait_log(&store, task.id, "ready").await;
    victim.start_kill().unwrap(); // SIGKILL
    let status = victim.wait().await.unwrap();
    assert!(!status.success());
    // The victim's command is in its own process group and outlives it; let it end.
    std::fs::write(&gate, "go").unwrap();

    until(
        "the dead worker's lease to expire and the task to be re-queued",
        async || (store.requeue_expired().await.unwrap() > 0).then_some(()),
    )
    .await;
    let rescuer = start(
        config(&env, "rescuer", TOKEN),
        api(&store, Duration::from_secs(30)).await,
    );
    let done = finished(&store, task.id).await;
    let summary = rescuer.stop().await;

    assert_succeeded(&done);
    assert_eq!(summary.succeeded, 1);
    let outcomes: Vec<_> = done.attempts_detail.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, vec![AttemptOutcome::Expired, AttemptOutcome::Succeeded]);
    let sha = done
        .task
        .result
        .as_ref()
        .and_then(|r| r.commit_sha.clone())
        .unwrap();
    assert_eq!(
        env.server.branch_sha("app", &format!("agentpool/{}", task.id)),
        Some(sha.clone())
    );
    // The dead worker's attempt was given back: the run that succeeded has its number.
    assert_eq!(
        env.server.read_file("app", &sha, "attempt.txt").as_deref(),
        Some("1\n")
    );
    assert_eq!(done.task.attempts, 1);
}

#[tokio::test]
async fn a_restarted_worker_kills_what_its_killed_predecessor_left_running() {
    let env = env().await;
    let (_db, store, url) = short_leases().await;
    let task = store
        .enqueue(command(&env, crate::worker::GRANDCHILDREN))
        .await
        .unwrap()
        .task;
    let dir = env.dir.path().join("worker");
    let mut first = spawn_worker(&url, &dir, "phoenix");
    let children = pids(&wait_log(&store, task.id, "ready").await);
    assert_eq!(children.len(), 2);
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    assert!(
        children.iter().all(|p| alive(*p)),
        "the orphans should still be running"
    );

    // Same worker, same directory: on start it kills the orphaned group.
    let mut second = spawn_worker(&url, &dir, "phoenix");
    until("the orphans to be killed", async || {
        children.iter().all(|p| !alive(*p)).then_some(())
    })
    .await;
    second.start_kill().unwrap();
    second.wait().await.unwrap();
}

/// A worker killed while git fetches for a task leaves that git running, in a process group of
/// its own: the same worker started again kills it before it takes the task again (a git left
/// running would write into the mirror and the task's directory under the new attempt), and
/// runs the task to success.
#[tokio::test]
async fn a_restarted_worker_kills_the_git_its_killed_predecessor_left_running() {
    let env = env().await;
    let (_db, store, url) = short_leases().await;
    let task = store
        .enqueue(command(&env, "echo done > done.txt"))
        .await
        .unwrap()
        .task;
    // A git that, while `slow` exists, writes its pid to `hung` and waits instead of cloning
    // or fetching; otherwise it is git.
    let slow = env.dir.path().join("slow");
    let hung = env.dir.path().join("hung");
    std::fs::write(&slow, "").unwrap();
    let git = env.dir.path().join("slow-git");
    let real = std::process::Command::new("sh")
        .args(["-c", "command -v git"])
        .output()
        .unwrap();
    let script = format!(
        "#!/bin/sh\ncase \"$*\" in *clone*|*fetch*) if [ -e '{slow}' ]; then echo $$ > '{hung}'; sleep 1000; fi;; esac\nexec {real} \"$@\"\n",
        slow = slow.display(),
        hung = hung.display(),
        real = String::from_utf8_lossy(&real.stdout).trim(),
    );
    std::fs::write(&git, script).unwrap();
    std::fs::set_permissions(&git, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let dir = env.dir.path().join("worker");
    let start = || {
        worker_command(&url, &dir, "phoenix")
            .env("AGENTPOOL_TEST_GIT", &git)
            .spawn()
            .unwrap()
    };
    let mut first = start();
    let pid = until("git to hang", async || {
        std::fs::read_to_string(&hung).ok()?.trim().parse::<i32>().ok()
    })
    .await;
    // Its run is recorded before it starts, and its group just after (git leads it: it is the
    // program started).
    let records = dir.join("state/running");
    let group = format!("{pid}\n");
    until("git's group to be recorded", async || {
        std::fs::read_dir(&records)
            .ok()?
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .any(|t| t.starts_with(&group))
            .then_some(())
    })
    .await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    assert!(alive(pid), "the orphaned git should still be running");

    std::fs::remove_file(&slow).unwrap();
    let mut second = start();
    until("the orphaned git to be killed", async || {
        (!alive(pid)).then_some(())
    })
    .await;
    let done = finished(&store, task.id).await;
    assert_succeeded(&done);
    second.start_kill().unwrap();
    second.wait().await.unwrap();
}
