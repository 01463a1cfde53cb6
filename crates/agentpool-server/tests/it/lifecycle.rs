//! Server lifecycle: `serve` from a database URL until shutdown, and the maintenance pass
//! rescuing a dead worker's task, but not the tasks of workers that could not reach it.

use std::time::Duration;

use agentpool_core::protocol::HeartbeatRequest;
use agentpool_core::{TaskState, WorkerStatus};
use agentpool_server::maintenance::{MaintenanceConfig, RescueGrace, run_once, run_pass};
use agentpool_testkit::db::{Backend, TestDb};

use crate::support::{claim_one, complete, register, spawn_app, submit_and_claim};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reports_its_port_and_stops_on_shutdown() {
    let db = TestDb::sqlite();
    let mut cfg = crate::support::test_config();
    cfg.database_url = db.url().to_string();
    cfg.auth = agentpool_server::AuthMode::NoAuthLoopback;
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(agentpool_server::serve(
        cfg,
        move |addr| {
            let _ = addr_tx.send(addr);
        },
        async move {
            let _ = stop_rx.await;
        },
    ));
    let addr = addr_rx.await.expect("bound address");
    assert_ne!(addr.port(), 0);
    let c = agentpool_client::Client::new(&format!("http://{addr}"), None).expect("client");
    c.ready().await.expect("ready");
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("stops in time")
        .expect("join")
        .expect("clean stop");
    assert!(c.ready().await.is_err(), "still answering after shutdown");
}

async fn maintenance_marks_a_silent_worker_offline_and_rescues_its_task(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (sub, wrk, dead, t, _) = submit_and_claim(&app, "work").await;
    // The worker goes silent past its lease and the heartbeat threshold.
    app.clock.advance(Duration::from_secs(300));
    let cfg = MaintenanceConfig {
        interval: Duration::from_secs(5),
        heartbeat_threshold: Duration::from_secs(90),
        retention: Duration::from_secs(7 * 24 * 3600),
        purge_every: 1,
    };
    run_once(app.state(), &cfg, true).await;
    assert_eq!(
        wrk.get_worker(&dead.id).await.expect("get").status,
        WorkerStatus::Offline
    );
    let d = app.submitter().get_task(t.id).await.expect("get");
    assert_eq!(d.task.state, TaskState::Queued);
    // Another worker takes it over at once and finishes it; the dead worker's attempt was
    // given back, so this one has its number.
    let alive = register(&wrk).await;
    let second = claim_one(&wrk, &alive.id).await;
    assert_eq!(second.task.id, t.id);
    assert_eq!(second.attempt, 1);
    complete(&wrk, &alive.id, &second).await;
    // A second pass (or another replica's) finds nothing more to do and changes nothing.
    run_once(app.state(), &cfg, false).await;
    assert_eq!(
        sub.get_task(t.id).await.expect("get").task.state,
        TaskState::Succeeded
    );
}

/// The server (or its database) was down for longer than a lease: every running task's lease
/// expired, because no worker could renew it. The server that comes back rescues none of them
/// for a lease TTL; a live worker's next heartbeat renews its lease and its report is taken,
/// so its task runs once. A worker still silent after that is dead, and its task is rescued.
async fn leases_that_expired_while_the_server_was_down_are_not_rescued_at_once(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let (sub, wrk, alive, t, claimed) = submit_and_claim(&app, "work").await;
    let dead = register(&wrk).await;
    let orphan = sub
        .submit(&crate::support::command_task("orphan"))
        .await
        .expect("submit")
        .task;
    assert_eq!(claim_one(&wrk, &dead.id).await.task.id, orphan.id);
    let cfg = MaintenanceConfig {
        interval: Duration::from_secs(5),
        heartbeat_threshold: Duration::from_secs(90),
        retention: Duration::from_secs(7 * 24 * 3600),
        purge_every: 1,
    };
    // Down for two minutes; the server starts again now, with a lease TTL of 60 s.
    app.clock.advance(Duration::from_secs(120));
    let mut grace = RescueGrace::new(Duration::from_secs(60), app.store.time());
    run_pass(app.state(), &cfg, false, &mut grace).await;
    for id in [t.id, orphan.id] {
        let d = sub.get_task(id).await.expect("get");
        assert_eq!((d.task.state, d.task.attempts), (TaskState::Running, 1), "{id}");
    }
    // The live worker is back: its lease is its own again, and its result is taken.
    let reply = wrk
        .heartbeat(
            &alive.id,
            &HeartbeatRequest {
                leases: vec![claimed.lease],
                status: None,
                status_message: None,
                cache: None,
            },
        )
        .await
        .expect("heartbeat");
    assert!(reply.lost.is_empty(), "{reply:?}");
    complete(&wrk, &alive.id, &claimed).await;
    let d = sub.get_task(t.id).await.expect("get");
    assert_eq!((d.task.state, d.task.attempts), (TaskState::Succeeded, 1));

    // A lease TTL later the other worker has still said nothing: its task is rescued.
    app.clock.advance(Duration::from_secs(61));
    run_pass(app.state(), &cfg, false, &mut grace).await;
    assert_eq!(
        sub.get_task(orphan.id).await.expect("get").task.state,
        TaskState::Queued
    );
    let metrics = crate::support::scrape(&app.base).await;
    assert!(
        metrics.lines().any(|l| l == "agentpool_leases_rescued_total 1"),
        "{metrics}"
    );
}

crate::both_backends!(
    maintenance_marks_a_silent_worker_offline_and_rescues_its_task,
    leases_that_expired_while_the_server_was_down_are_not_rescued_at_once,
);
