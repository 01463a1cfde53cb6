//! The WorkerPool reconciler in the kube-rs style: `reconcile` brings one pool's headless
//! Service and StatefulSet to what the pool and its queue call for (server-side apply, owned
//! by the pool; an object of that name the pool does not own is left alone and named in the
//! pool's conditions), drains the pods a scale-down removes before removing them, and writes
//! the pool's status through the status subresource; `error_policy` retries failures. The
//! operator keeps no state of its own between passes: what a scale-down needs to go on (its
//! delay's start, the workers it drained) is in the pool's status, so another replica or a
//! restarted operator continues it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentpool_core::protocol::QueueStats;
use agentpool_core::{Labels, WorkerId};
use async_trait::async_trait;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Event, Pod, Secret, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt};

use super::crd::{WorkerPool, WorkerPoolStatus};
use super::metrics::Metrics;
use super::objects::{self, MANAGER};
use super::scale;
use super::status::{ScaleDown, cache_status, condition, merge_conditions};

/// What the operator asks the agentpool server.
#[async_trait]
pub trait QueueApi: Send + Sync {
    async fn queue_stats(
        &self,
        labels: &Labels,
        agents: &[String],
        projects: &[String],
    ) -> Result<QueueStats, String>;
    async fn drain(&self, worker: &WorkerId) -> Result<(), String>;
}

/// A pool's server through the agentpool client.
#[async_trait]
impl QueueApi for agentpool_client::Client {
    async fn queue_stats(
        &self,
        labels: &Labels,
        agents: &[String],
        projects: &[String],
    ) -> Result<QueueStats, String> {
        agentpool_client::Client::queue_stats(self, Some(labels), agents, projects)
            .await
            .map_err(|e| e.to_string())
    }

    async fn drain(&self, worker: &WorkerId) -> Result<(), String> {
        self.drain_worker(worker)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Makes the server client of one pool from its `server` and the worker token its Secret
/// holds.
pub trait Connect: Send + Sync {
    fn connect(&self, server: &str, token: &str) -> Result<Arc<dyn QueueApi>, String>;
}

/// Errors a reconcile pass can end with; `error_policy` retries all of them.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the WorkerPool has no namespace")]
    NoNamespace,
}

/// Shared by every reconcile pass.
pub struct Context {
    pub client: Client,
    pub connect: Arc<dyn Connect>,
    pub metrics: Arc<Metrics>,
    /// How often a pool is looked at again when nothing happens (the queue changes without a
    /// Kubernetes event).
    pub interval: Duration,
    /// While a scale-down waits for busy pods: how soon to look again.
    pub scaling_interval: Duration,
}

impl Context {
    pub fn new(client: Client, connect: Arc<dyn Connect>, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            connect,
            metrics,
            interval: Duration::from_secs(15),
            scaling_interval: Duration::from_secs(3),
        }
    }
}

/// The reason of the conditions of a pool whose Service or StatefulSet name is taken by an
/// object that is not the pool's.
pub const NAME_CONFLICT: &str = "NameConflict";

fn params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// The server client of `pool`, from the token its Secret holds.
async fn queue_api(pool: &WorkerPool, ctx: &Context, ns: &str) -> Result<Arc<dyn QueueApi>, String> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let r = &pool.spec.token_secret;
    let secret = secrets
        .get_opt(&r.name)
        .await
        .map_err(|e| match &e {
            // The shipped Role lets the operator read only the Secrets it names.
            kube::Error::Api(s) if s.code == 403 => format!(
                "the operator may not read the token Secret {0}: add {0} to the resourceNames of \
                 the secrets rule in the operator's Role (operator-rbac.yaml)",
                r.name
            ),
            _ => format!("the token Secret {} cannot be read: {e}", r.name),
        })?
        .ok_or_else(|| format!("the token Secret {} does not exist", r.name))?;
    let token = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .ok_or_else(|| format!("the token Secret {} has no key {}", r.name, r.key))?;
    ctx.connect.connect(&pool.spec.server, token.trim())
}

/// Reconcile one pool.
pub async fn reconcile(pool: Arc<WorkerPool>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let result = reconcile_inner(&pool, &ctx).await;
    ctx.metrics.observe_reconcile(started.elapsed(), result.is_ok());
    result
}

async fn reconcile_inner(pool: &WorkerPool, ctx: &Context) -> Result<Action, ReconcileError> {
    let ns = pool.namespace().ok_or(ReconcileError::NoNamespace)?;
    let name = pool.name_any();
    let pools: Api<WorkerPool> = Api::namespaced(ctx.client.clone(), &ns);
    // The pool as the API server has it now, not as the watch cache last saw it: the status
    // carries the scale-down state, and acting on an old one (a delay that a later pass had
    // stopped) could shrink the pool too early.
    let Some(latest) = pools.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let pool = &latest;
    let generation = pool.metadata.generation;
    let old_conditions = pool
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    if let Err(msg) = pool.spec.check() {
        let status = WorkerPoolStatus {
            observed_generation: generation,
            conditions: merge_conditions(
                &old_conditions,
                vec![
                    condition("Ready", false, "InvalidSpec", &msg, generation),
                    condition("Degraded", true, "InvalidSpec", msg, generation),
                ],
            ),
            ..pool.status.clone().unwrap_or_default()
        };
        patch_status(&pools, &name, &status).await?;
        return Ok(Action::await_change());
    }

    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = sets.get_opt(&name).await?;
    // A forced apply would take over another app's Service or StatefulSet that bears the
    // pool's name, and the owner reference it adds would have the garbage collector delete it
    // with the pool: such an object is left alone, and the pool says what is in its way.
    let service = services.get_opt(&name).await?;
    let in_the_way: Vec<String> = [
        service
            .as_ref()
            .and_then(|s| objects::not_ours("Service", &s.metadata, pool)),
        existing
            .as_ref()
            .and_then(|s| objects::not_ours("StatefulSet", &s.metadata, pool)),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !in_the_way.is_empty() {
        let left = if in_the_way.len() == 1 {
            "it as it is"
        } else {
            "them as they are"
        };
        let msg = format!(
            "{}: the operator leaves {left}; rename the WorkerPool, or remove or rename what \
             is in its way",
            in_the_way.join("; ")
        );
        // Said once, when it starts; the condition keeps saying it.
        let said = old_conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.reason == NAME_CONFLICT);
        if !said {
            tracing::warn!(pool = %name, "{msg}");
        }
        let status = WorkerPoolStatus {
            observed_generation: generation,
            conditions: merge_conditions(
                &old_conditions,
                vec![
                    condition("Ready", false, NAME_CONFLICT, &msg, generation),
                    condition("Degraded", true, NAME_CONFLICT, msg, generation),
                ],
            ),
            ..pool.status.clone().unwrap_or_default()
        };
        patch_status(&pools, &name, &status).await?;
        // The object in the way is not the pool's, so its removal triggers no pass: look again.
        return Ok(Action::requeue(ctx.interval));
    }

    services
        .patch(&name, &params(), &Patch::Apply(objects::build_service(pool)))
        .await?;

    let current = existing
        .as_ref()
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.replicas);

    let (stats, server_problem) = match queue_api(pool, ctx, &ns).await {
        Ok(api) => match api
            .queue_stats(
                &objects::worker_labels(pool),
                &pool.spec.agents,
                &pool.spec.projects,
            )
            .await
        {
            Ok(s) => (Some((s, api)), None),
            Err(e) => (None, Some(format!("queue statistics unavailable: {e}"))),
        },
        Err(e) => (None, Some(e)),
    };

    let desired = scale::desired_replicas(&pool.spec, stats.as_ref().map(|(s, _)| s));
    // Without statistics an autoscaled pool keeps its size (or starts at its minimum).
    let desired = desired
        .unwrap_or_else(|| current.unwrap_or_else(|| pool.spec.autoscale.as_ref().map_or(0, |a| a.min)));
    let current_n = current.unwrap_or(0);
    let workers = stats.as_ref().map(|(s, _)| s.workers.clone()).unwrap_or_default();
    let mut scale_down = ScaleDown::from_status(pool.status.as_ref().and_then(|s| s.scale_down.as_ref()));
    let delay = pool
        .spec
        .autoscale
        .as_ref()
        .map_or(0, |a| a.scale_down_delay_seconds.max(0));
    // Draining needs the server; without it the pool keeps its size, and the scale-down
    // state as it was.
    let shrink = stats.is_some()
        && scale_down.below(
            desired,
            current_n,
            chrono::Duration::seconds(delay),
            chrono::Utc::now(),
        );
    let step = scale::step(&name, current_n, desired, &workers, &scale_down.drained, shrink);

    let mut drained = Vec::new();
    if let Some((_, api)) = &stats
        && !step.drain.is_empty()
    {
        // Written down before asking: a worker the operator drained without the status naming
        // it would never be brought back should demand return (it stays drained).
        scale_down.drained.extend(step.drain.iter().cloned());
        let status = WorkerPoolStatus {
            scale_down: scale_down.to_status(),
            ..pool.status.clone().unwrap_or_default()
        };
        patch_status(&pools, &name, &status).await?;
        for id in &step.drain {
            let Ok(wid) = WorkerId::parse(id.clone()) else {
                continue;
            };
            match api.drain(&wid).await {
                Ok(()) => {
                    ctx.metrics.drains.inc();
                    drained.push(id.clone());
                    tracing::info!(pool = %name, worker = %id, "draining for a scale-down");
                }
                Err(e) => tracing::warn!(pool = %name, worker = %id, "drain failed: {e}"),
            }
        }
    }
    let set = sets
        .patch(
            &name,
            &params(),
            &Patch::Apply(objects::build_statefulset(pool, step.replicas)),
        )
        .await?;
    if current != Some(step.replicas) {
        tracing::info!(pool = %name, from = current_n, to = step.replicas, desired, "scaled");
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    for pod in &step.restart {
        match pods.delete(pod, &DeleteParams::default()).await {
            Ok(_) => {
                tracing::info!(pool = %name, pod = %pod, "restarting a drained pod the pool needs again")
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    scale_down.settle(
        &name,
        (step.replicas, desired),
        stats.as_ref().map(|_| workers.as_slice()),
        &step.restart,
        &drained,
    );

    // Only for the status: a pass that cannot read the pods still sizes the pool.
    let selector = objects::pod_selector(pool);
    let (failing, unscheduled) = match pods.list(&ListParams::default().labels(&selector)).await {
        Ok(list) => {
            let events: Api<Event> = Api::namespaced(ctx.client.clone(), &ns);
            let mounting = super::pods::stuck_mounting(&events, &list.items).await;
            (
                super::pods::failing(&list.items, mounting),
                super::pods::unscheduled(&list.items),
            )
        }
        Err(e) => {
            tracing::warn!(pool = %name, "could not read the pool's pods: {e}");
            (None, None)
        }
    };

    let ready = set.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    let replicas = set.status.as_ref().map_or(0, |s| s.replicas);
    let scaling = step.replicas != desired || replicas != step.replicas;
    let mut conditions = Vec::new();
    let gen_ = generation;
    // Every problem is said; the reason is the first's, the one to fix first.
    let problems: Vec<(&str, String)> = [
        ("ServerUnavailable", server_problem.clone()),
        ("PodsFailing", failing),
        ("WorkersUnhealthy", super::pods::unhealthy(&workers)),
        ("AgentKeyRefused", super::pods::agents_retired(&workers)),
        (
            "TasksNoWorkerTakes",
            stats.as_ref().and_then(|(s, _)| scale::unservable(s)).map(|n| {
                format!(
                    "{} of the pool's {} what none of its workers offers (an agent its image \
                     lacks or whose key was refused, a label, a project): {} not count towards \
                     its size",
                    agentpool_core::render::count(n, "runnable task", "runnable tasks"),
                    if n == 1 { "needs" } else { "need" },
                    if n == 1 { "it does" } else { "they do" }
                )
            }),
        ),
    ]
    .into_iter()
    .filter_map(|(reason, p)| Some((reason, p?)))
    .collect();
    conditions.push(match problems.first() {
        Some((reason, _)) => {
            let said: Vec<&str> = problems.iter().map(|(_, p)| p.as_str()).collect();
            condition("Degraded", true, reason, said.join("; "), gen_)
        }
        None => condition("Degraded", false, "AsExpected", "", gen_),
    });
    conditions.push(if scaling {
        let msg = if step.waiting_for.is_empty() {
            format!("scaling from {current_n} to {desired} pods")
        } else {
            format!(
                "scaling down to {desired} pods; waiting for {} to finish their tasks",
                step.waiting_for.join(", ")
            )
        };
        condition("Scaling", true, "DesiredReplicasChanged", msg, gen_)
    } else {
        condition("Scaling", false, "Stable", "", gen_)
    });
    let is_ready = ready >= desired && server_problem.is_none();
    conditions.push(condition(
        "Ready",
        is_ready,
        if is_ready { "PodsReady" } else { "PodsNotReady" },
        match unscheduled.filter(|_| !is_ready) {
            Some(waiting) => format!("{ready} of {desired} pods ready; {waiting}"),
            None => format!("{ready} of {desired} pods ready"),
        },
        gen_,
    ));
    let s = stats.as_ref().map(|(s, _)| s);
    let count = |f: fn(&QueueStats) -> u32| s.map_or(0, |s| i32::try_from(f(s)).unwrap_or(i32::MAX));
    let status = WorkerPoolStatus {
        replicas,
        ready_replicas: ready,
        desired_replicas: desired,
        busy_workers: count(|s| s.worker_counts.busy),
        idle_workers: count(|s| s.worker_counts.idle),
        draining_workers: count(|s| s.worker_counts.draining),
        unhealthy_workers: count(|s| s.worker_counts.unhealthy),
        queued_tasks: s.map_or(0, |s| i64::try_from(s.queued).unwrap_or(i64::MAX)),
        runnable_tasks: s
            .and_then(|s| s.queued_runnable)
            .map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        runnable_tasks_no_worker: s
            .and_then(|s| s.runnable_no_worker)
            .map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        running_tasks: s.map_or(0, |s| i64::try_from(s.running).unwrap_or(i64::MAX)),
        // Without the server, the figures it last gave.
        cache: match &stats {
            Some(_) => cache_status(&workers),
            None => pool.status.as_ref().and_then(|s| s.cache.clone()),
        },
        scale_down: scale_down.to_status(),
        observed_generation: generation,
        conditions: merge_conditions(&old_conditions, conditions),
    };
    ctx.metrics.record_pool(&ns, &name, &status);
    patch_status(&pools, &name, &status).await?;
    Ok(Action::requeue(if scaling || server_problem.is_some() {
        ctx.scaling_interval
    } else {
        ctx.interval
    }))
}

async fn patch_status(
    pools: &Api<WorkerPool>,
    name: &str,
    status: &WorkerPoolStatus,
) -> Result<(), kube::Error> {
    let body = serde_json::json!({
        "apiVersion": "agentpool.dev/v1alpha1",
        "kind": "WorkerPool",
        "status": status,
    });
    pools.patch_status(name, &params(), &Patch::Apply(body)).await?;
    Ok(())
}

/// Retry a failed pass after a pause (the controller also reruns it on the next change).
pub fn error_policy(pool: Arc<WorkerPool>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    tracing::warn!(pool = %pool.name_any(), "reconcile failed: {error}");
    ctx.metrics.errors.inc();
    Action::requeue(ctx.scaling_interval)
}
