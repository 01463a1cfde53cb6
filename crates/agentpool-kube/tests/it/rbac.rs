//! The shipped Roles as a contract the in-memory API server does not enforce, both ways: every
//! request the launcher or the operator makes in these tests must be one its Role in
//! `deploy/kustomize/base` allows, judged as the Kubernetes authorizer judges it (API group,
//! resource or subresource, verb, and the object's name where a rule lists `resourceNames`);
//! and a run of each that does everything it can do uses every right its Role grants. A call
//! added to the code without its right fails here instead of with a 403 in a cluster, and a
//! right the code no longer uses fails here instead of lingering in the Role.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use agentpool_core::{WorkerId, WorkerStatus};
use agentpool_kube::fake::{FakeApi, NAMESPACE, Recorded};
use agentpool_kube::job::build_job;
use agentpool_kube::pool::{Metrics, OperatorConfig, run_operator};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::launcher::{config, eventually, job_being_deleted, launched, pod_of, start, template};
use crate::pool::{Fixed, Queue, pool_json, token_secret, worker};
use crate::queue::work;
use crate::schema::repo_root;

/// The Role the launcher runs under.
pub const LAUNCHER: &str = "deploy/kustomize/base/rbac.yaml";
/// The Role the operator runs under.
pub const OPERATOR: &str = "deploy/kustomize/base/operator-rbac.yaml";

#[derive(Debug, Deserialize)]
struct Doc {
    kind: String,
    #[serde(default)]
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    api_groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
}

/// One right: API group, resource (`workerpools/status` for a subresource), verb, and the one
/// object it is limited to (`None`: every object of the resource).
type Right = (String, String, String, Option<String>);

/// The rules of the one Role in `file`.
fn rules(file: &str) -> Vec<Rule> {
    let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
    let roles: Vec<Doc> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| Doc::deserialize(d).unwrap_or_else(|e| panic!("{file}: {e}")))
        .filter(|d| d.kind == "Role")
        .collect();
    assert_eq!(roles.len(), 1, "{file}: one Role");
    roles.into_iter().flat_map(|r| r.rules).collect()
}

/// Every right the Role in `file` grants, one per group, resource, verb and listed name.
fn granted(file: &str) -> BTreeSet<Right> {
    let mut all = BTreeSet::new();
    for rule in rules(file) {
        assert!(!rule.verbs.iter().any(|v| v == "*"), "{file}: no wildcard verbs");
        let names: Vec<Option<String>> = if rule.resource_names.is_empty() {
            vec![None]
        } else {
            rule.resource_names.iter().cloned().map(Some).collect()
        };
        for g in &rule.api_groups {
            for res in &rule.resources {
                for v in &rule.verbs {
                    for n in &names {
                        all.insert((g.clone(), res.clone(), v.clone(), n.clone()));
                    }
                }
            }
        }
    }
    all
}

/// The API group of a resource (plural) agentpool uses.
fn group(resource: &str) -> &'static str {
    match resource {
        "jobs" => "batch",
        "statefulsets" => "apps",
        "leases" => "coordination.k8s.io",
        "workerpools" => "agentpool.dev",
        "pods" | "events" | "secrets" | "services" | "configmaps" => "",
        other => panic!("no API group known for {other}"),
    }
}

/// The authorizer's verb for a request.
fn verb(r: &Recorded) -> &'static str {
    let watch = r.query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1");
    match (r.method.as_str(), r.name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (m, _) => panic!("no verb for {m}"),
    }
}

/// The rights a request needs. A server-side apply of an object (not of a subresource) creates
/// it when it does not exist, and the API server then also authorizes it as `create`.
fn needed(r: &Recorded) -> Vec<Right> {
    let group = group(&r.resource).to_string();
    let resource = match &r.subresource {
        Some(sub) => format!("{}/{sub}", r.resource),
        None => r.resource.clone(),
    };
    let mut verbs = vec![verb(r)];
    let apply = r
        .content_type
        .as_deref()
        .is_some_and(|t| t.starts_with("application/apply-patch"));
    if apply && r.subresource.is_none() {
        verbs.push("create");
    }
    verbs
        .into_iter()
        .map(|v| (group.clone(), resource.clone(), v.to_string(), r.name.clone()))
        .collect()
}

/// Whether granted right `g` covers needed right `n`: a right limited to one object covers
/// requests for that object only (never a list or a watch).
fn covers(g: &Right, n: &Right) -> bool {
    g.0 == n.0 && g.1 == n.1 && g.2 == n.2 && (g.3.is_none() || g.3 == n.3)
}

/// The needed rights of `requests` that the Role in `file` does not grant.
fn refused(requests: &[Recorded], file: &str) -> Vec<String> {
    let granted = granted(file);
    let mut refused: Vec<String> = requests
        .iter()
        .flat_map(needed)
        .filter(|n| !granted.iter().any(|g| covers(g, n)))
        .map(|(g, res, v, name)| format!("{v} {res} ({g:?}) {name:?}"))
        .collect();
    refused.sort();
    refused.dedup();
    refused
}

/// Every request made of `fake` so far is allowed by the Role in `file`.
pub fn assert_allowed(fake: &FakeApi, file: &str) {
    let refused = refused(&fake.requests(), file);
    assert!(refused.is_empty(), "{file} does not allow: {refused:#?}");
}

/// The Role in `file` grants exactly what `requests` needed: each is allowed, and each right
/// it grants was used.
fn assert_exactly(requests: &[Recorded], file: &str) {
    let refused = refused(requests, file);
    assert!(refused.is_empty(), "{file} does not allow: {refused:#?}");
    let used: Vec<Right> = requests.iter().flat_map(needed).collect();
    let unused: Vec<String> = granted(file)
        .into_iter()
        .filter(|g| !used.iter().any(|n| covers(g, n)))
        .map(|(g, res, v, name)| format!("{v} {res} ({g:?}) {name:?}"))
        .collect();
    assert!(
        unused.is_empty(),
        "{file} grants what the code does not use: {unused:#?}"
    );
}

/// The checks are not no-ops: a request the Role does not allow is found, and so is a right
/// no request used.
#[tokio::test]
async fn a_request_the_role_does_not_allow_and_a_right_nothing_uses_are_found() {
    use k8s_openapi::api::core::v1::Secret;
    let fake = FakeApi::new();
    let secrets: kube::Api<Secret> = kube::Api::namespaced(fake.client(), NAMESPACE);
    // The launcher may create Secrets but not read them.
    let _ = secrets.get_opt("agentpool-worker-token").await;
    let found = std::panic::catch_unwind(|| assert_allowed(&fake, LAUNCHER));
    let said = *found.unwrap_err().downcast::<String>().unwrap();
    assert!(said.contains("get secrets"), "{said}");
    // The operator may read the pools' token Secret, and no other.
    assert_allowed(&fake, OPERATOR);
    let _ = secrets.get_opt("agentpool-server-key").await;
    let found = std::panic::catch_unwind(|| assert_allowed(&fake, OPERATOR));
    let said = *found.unwrap_err().downcast::<String>().unwrap();
    assert!(
        said.contains("get secrets") && said.contains("agentpool-server-key"),
        "{said}"
    );
    // Reading one Secret is not all the operator does.
    let only = &fake.requests()[..1];
    let found = std::panic::catch_unwind(|| assert_exactly(only, OPERATOR));
    let said = *found.unwrap_err().downcast::<String>().unwrap();
    assert!(
        said.contains("grants what the code does not use") && said.contains("list pods"),
        "{said}"
    );
}

/// A launcher run that does all a launcher does: adopts a Job whose create was refused as
/// existing (get), creates the attempt Secret, lists its Jobs and their pods, reads the events
/// of a pod placed on a node, and deletes the Job of a pod that cannot pull its image.
#[tokio::test]
async fn the_launcher_role_grants_exactly_what_the_launcher_uses() {
    let fake = FakeApi::new();
    let w = work(1);
    let existing = build_job(&template(), &WorkerId::parse("launcher-a").unwrap(), &w);
    fake.put("jobs", serde_json::to_value(&existing).unwrap());
    let queue = Arc::new(crate::queue::Queue::with(vec![w.clone()]));
    let launcher = start(config("launcher-a"), &queue, &fake);
    let name = launched(&fake, &w).await;
    fake.put_pod(&pod_of(&fake, &name, "pod-container-creating.json"));
    eventually("the placed pod's events read", || {
        fake.requests().iter().any(|r| r.resource == "events")
    })
    .await;
    fake.put_pod(&pod_of(&fake, &name, "pod-image-pull-backoff.json"));
    job_being_deleted(&fake, &name).await;
    launcher.stop().await;
    assert_exactly(&fake.requests(), LAUNCHER);
}

/// An operator run that does all the operator does: leads (a Lease created, renewed and
/// released), watches pools and what they own, reads a pool's token Secret, applies its
/// Service and StatefulSet, restarts a pod it drained that the pool needs again, reads the
/// events of a pod placed on a node, and writes the pool's status.
#[tokio::test]
async fn the_operator_role_grants_exactly_what_the_operator_uses() {
    let fake = FakeApi::new();
    token_secret(&fake);
    let mut pool = pool_json(json!({"replicas": 2}));
    pool["status"] = json!({"scaleDown": {"drained": ["agents-0"]}});
    fake.put("workerpools", pool);
    let queue = Arc::new(Queue::default());
    queue.set(
        0,
        vec![
            worker("agents-0", WorkerStatus::Draining, 0),
            worker("agents-1", WorkerStatus::Idle, 0),
        ],
    );
    let labels = crate::fixture::<Value>("pod-crashloop.json")["metadata"]["labels"].clone();
    for name in ["agents-0", "agents-1"] {
        let mut pod: Value = crate::fixture("pod-container-creating.json");
        pod["metadata"]["name"] = json!(name);
        pod["metadata"]["labels"] = labels.clone();
        fake.put("pods", pod);
    }
    let mut cfg = OperatorConfig::new(NAMESPACE, "op-a");
    cfg.renew_every = Duration::from_millis(100);
    let stop = CancellationToken::new();
    let op = tokio::spawn(run_operator(
        fake.client(),
        cfg,
        Arc::new(Fixed(queue)),
        Arc::new(Metrics::new()),
        stop.clone(),
    ));
    eventually("the drained pod restarted and the status written", || {
        let restarted = fake.get::<Value>("pods", "agents-0").is_none();
        let status = fake.get::<Value>("workerpools", "agents").unwrap()["status"]["conditions"].is_array();
        let renewed = fake
            .requests()
            .iter()
            .any(|r| r.resource == "leases" && r.method == "PUT");
        restarted && status && renewed
    })
    .await;
    stop.cancel();
    op.await.unwrap();
    assert_exactly(&fake.requests(), OPERATOR);
}
