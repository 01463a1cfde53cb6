//! Server lifecycle: `serve` from a database URL until shutdown, and the maintenance pass
//! rescuing a dead worker's task.

use std::time::Duration;

use agentpool_core::{TaskState, WorkerStatus};
use agentpool_server::maintenance::{MaintenanceConfig, run_once};
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

crate::both_backends!(maintenance_marks_a_silent_worker_offline_and_rescues_its_task);
