//! What the operator leaves alone: a Service or StatefulSet of another app that bears a pool's
//! name is neither changed nor given an owner reference (through which deleting the pool would
//! delete it); the pool says what is in its way. And a token Secret its Role does not let it
//! read is named in the pool's status with the fix.

use agentpool_kube::pool::reconcile::NAME_CONFLICT;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use serde_json::{Value, json};

use crate::pool::{autoscale, setup};

/// A Service `agents` of another app, controlled by its Deployment.
fn foreign_service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {
            "name": "agents",
            "labels": {"app": "agents-dashboard"},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "name": "agents-dashboard",
                "uid": "7f0c1f4e-0000-4000-8000-000000000001", "controller": true
            }]
        },
        "spec": {"selector": {"app": "agents-dashboard"}, "ports": [{"port": 80}]}
    })
}

#[tokio::test]
async fn a_service_of_another_app_with_the_pools_name_is_left_alone_and_named() {
    let s = setup(autoscale(1, 4));
    s.fake.put("services", foreign_service());
    let before: Value = s.fake.get("services", "agents").unwrap();
    s.pass().await;

    let after: Value = s.fake.get("services", "agents").unwrap();
    assert_eq!(after, before, "not changed, not even its resourceVersion");
    assert!(
        s.fake.get::<StatefulSet>("statefulsets", "agents").is_none(),
        "nothing of the pool is created beside it"
    );
    let touched: Vec<_> = s
        .fake
        .writes()
        .into_iter()
        .filter(|r| r.resource != "workerpools")
        .map(|r| format!("{} {}", r.method, r.resource))
        .collect();
    assert!(touched.is_empty(), "{touched:?}");
    let (status, reason, message) = s.condition_said("Degraded");
    assert_eq!((status.as_str(), reason.as_str()), ("True", NAME_CONFLICT));
    assert!(
        message.starts_with("the Service agents is controlled by Deployment agents-dashboard"),
        "{message}"
    );
    assert!(message.contains("rename the WorkerPool"), "{message}");
    assert_eq!(s.condition("Ready"), ("False".into(), NAME_CONFLICT.into()));

    // Deleting the pool does not take the other app's Service with it.
    s.fake.remove("workerpools", "agents");
    assert_eq!(s.fake.get::<Value>("services", "agents"), Some(before));
}

#[tokio::test]
async fn a_statefulset_without_an_owner_is_left_alone_and_the_pool_proceeds_once_it_is_gone() {
    let s = setup(json!({"replicas": 2}));
    s.fake.put(
        "statefulsets",
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "agents"},
            "spec": {
                "replicas": 5, "serviceName": "agents",
                "selector": {"matchLabels": {"app": "agents"}},
                "template": {"metadata": {"labels": {"app": "agents"}},
                             "spec": {"containers": [{"name": "db", "image": "postgres:17"}]}}
            }
        }),
    );
    let before: Value = s.fake.get("statefulsets", "agents").unwrap();
    s.pass().await;
    assert_eq!(s.fake.get::<Value>("statefulsets", "agents"), Some(before));
    assert!(
        s.fake.get::<Service>("services", "agents").is_none(),
        "the pool's Service is not created either"
    );
    let (_, reason, message) = s.condition_said("Degraded");
    assert_eq!(reason, NAME_CONFLICT);
    assert!(
        message.starts_with("the StatefulSet agents exists and is not this WorkerPool's"),
        "{message}"
    );

    // Its owner removes it: the next pass makes the pool's own.
    s.fake.remove("statefulsets", "agents");
    s.pass().await;
    assert_eq!(s.replicas(), 2);
    assert_eq!(s.condition("Degraded").0, "False");
    // And from then on the pool's own objects are the pool's to change.
    s.pass().await;
    assert_eq!(s.condition("Degraded").0, "False");
}

/// A pool deleted and created again under the same name is another pool (another uid): the
/// objects of the first are not adopted, they go with it.
#[tokio::test]
async fn objects_of_an_earlier_pool_of_the_same_name_are_not_adopted() {
    let s = setup(json!({"replicas": 1}));
    s.pass().await;
    let mut pool = serde_json::to_value(s.pool()).unwrap();
    pool["metadata"]["uid"] = json!("9a9a9a9a-0000-4000-8000-000000000009");
    s.fake.put("workerpools", pool);
    let before: Value = s.fake.get("statefulsets", "agents").unwrap();
    s.pass().await;
    assert_eq!(s.fake.get::<Value>("statefulsets", "agents"), Some(before));
    let (_, reason, message) = s.condition_said("Degraded");
    assert_eq!(reason, NAME_CONFLICT);
    assert!(
        message.contains("the Service agents belongs to an earlier WorkerPool of this name"),
        "{message}"
    );
}

/// The shipped Role lets the operator read only the token Secrets it names: a pool naming
/// another one is told how to fix it, and keeps its size.
#[tokio::test]
async fn a_token_secret_the_operator_may_not_read_is_named_with_the_fix() {
    let s = setup(autoscale(2, 5));
    s.fake.forbid("secrets", "agentpool-worker-token");
    s.queue.set(8, vec![]);
    s.pass().await;
    let (status, reason, message) = s.condition_said("Degraded");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "ServerUnavailable"));
    assert_eq!(
        message,
        "the operator may not read the token Secret agentpool-worker-token: add \
         agentpool-worker-token to the resourceNames of the secrets rule in the operator's Role \
         (operator-rbac.yaml)"
    );
    assert_eq!(
        s.replicas(),
        2,
        "without statistics: its minimum, not the queue's 4"
    );
}
