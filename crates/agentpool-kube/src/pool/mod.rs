//! The WorkerPool operator: persistent, warm agentpool workers run as a StatefulSet per
//! pool, scaled on the depth of the queue they serve and drained before any pod goes. The
//! pods are ordinary pull-based workers, so every queue guarantee (dependencies, branch locks,
//! leases, retries) holds for pool tasks as for any other.

pub mod crd;
pub mod leader;
pub mod metrics;
pub mod objects;
pub mod pods;
pub mod reconcile;
pub mod scale;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::Controller;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

pub use crd::{PoolCacheStatus, ScaleDownStatus, WorkerPool, WorkerPoolSpec, WorkerPoolStatus, crd_yaml};
pub use leader::LeaderElector;
pub use metrics::Metrics;
pub use reconcile::{Connect, Context, QueueApi, ReconcileError, error_policy, reconcile};

/// How an operator replica runs.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// The namespace whose WorkerPools this operator manages (its RBAC is a Role there).
    pub namespace: String,
    /// This replica's name in the leader Lease (the pod name in a cluster).
    pub identity: String,
    pub lease_name: String,
    pub lease_duration: Duration,
    /// How often the leader renews (and a follower tries to take over).
    pub renew_every: Duration,
    pub interval: Duration,
    pub scaling_interval: Duration,
}

impl OperatorConfig {
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            identity: identity.into(),
            lease_name: "agentpool-operator".into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            interval: Duration::from_secs(15),
            scaling_interval: Duration::from_secs(3),
        }
    }
}

/// Run the operator until `shutdown`: wait to lead, then reconcile every WorkerPool of the
/// namespace (on each change of a pool or of what it owns, and every `interval`), and stop
/// reconciling as soon as leadership cannot be confirmed.
pub async fn run_operator(
    client: Client,
    cfg: OperatorConfig,
    connect: Arc<dyn Connect>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let elector = LeaderElector::new(
        Api::<Lease>::namespaced(client.clone(), &cfg.namespace),
        &cfg.lease_name,
        &cfg.identity,
        cfg.lease_duration,
    );
    let mut ctx = Context::new(client.clone(), connect, metrics.clone());
    ctx.interval = cfg.interval;
    ctx.scaling_interval = cfg.scaling_interval;
    let ctx = Arc::new(ctx);
    loop {
        // Follow until the Lease is ours.
        loop {
            match elector.try_lead().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::warn!("leader election: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(cfg.renew_every) => {}
                _ = shutdown.cancelled() => return,
            }
        }
        tracing::info!(identity = %cfg.identity, "leading: reconciling WorkerPools");
        metrics.leader.set(1);
        let pools = Api::<WorkerPool>::namespaced(client.clone(), &cfg.namespace);
        let sets = Api::<StatefulSet>::namespaced(client.clone(), &cfg.namespace);
        let services = Api::<Service>::namespaced(client.clone(), &cfg.namespace);
        let controller = Controller::new(pools, watcher::Config::default())
            .owns(sets, watcher::Config::default())
            .owns(services, watcher::Config::default())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|r| async move {
                if let Err(e) = r {
                    tracing::debug!("controller: {e}");
                }
            });
        let renew = async {
            let mut confirmed = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(cfg.renew_every).await;
                match elector.try_lead().await {
                    Ok(true) => confirmed = tokio::time::Instant::now(),
                    Ok(false) => return,
                    // A transient API error: keep leading while the Lease is surely still ours.
                    Err(e) => {
                        tracing::warn!("renewing the leader Lease: {e}");
                        if confirmed.elapsed() + cfg.renew_every >= cfg.lease_duration {
                            return;
                        }
                    }
                }
            }
        };
        tokio::select! {
            _ = controller => tracing::warn!("the controller stopped"),
            _ = renew => tracing::warn!("leadership lost: no longer reconciling"),
            _ = shutdown.cancelled() => {}
        }
        metrics.leader.set(0);
        if shutdown.is_cancelled() {
            elector.release().await;
            return;
        }
    }
}
