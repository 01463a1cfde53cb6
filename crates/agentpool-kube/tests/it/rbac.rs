//! The shipped Roles as a contract the in-memory API server does not enforce: every request the
//! launcher or the operator makes in these tests must be one its Role in
//! `deploy/kustomize/base` allows, judged as the Kubernetes authorizer judges it (API group,
//! resource or subresource, verb). A call added to the code without its right in the Role
//! fails here instead of with a 403 in a cluster.

use agentpool_kube::fake::{FakeApi, Recorded};
use serde::Deserialize;

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
}

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

/// Every request made of `fake` so far is allowed by the Role in `file`.
pub fn assert_allowed(fake: &FakeApi, file: &str) {
    let rules = rules(file);
    let mut refused = Vec::new();
    for r in fake.requests() {
        let group = group(&r.resource);
        let resource = match &r.subresource {
            Some(sub) => format!("{}/{sub}", r.resource),
            None => r.resource.clone(),
        };
        let verb = verb(&r);
        let allowed = rules.iter().any(|rule| {
            rule.api_groups.iter().any(|g| g == group)
                && rule.resources.contains(&resource)
                && rule.verbs.iter().any(|v| v == verb || v == "*")
        });
        if !allowed {
            refused.push(format!("{verb} {resource} ({group:?}) {:?}", r.name));
        }
    }
    refused.dedup();
    assert!(refused.is_empty(), "{file} does not allow: {refused:#?}");
}

/// The check is not a no-op: a request the Role does not allow is found.
#[tokio::test]
async fn a_request_the_role_does_not_allow_is_found() {
    use k8s_openapi::api::core::v1::Secret;
    let fake = FakeApi::new();
    let secrets: kube::Api<Secret> = kube::Api::namespaced(fake.client(), agentpool_kube::fake::NAMESPACE);
    // The launcher may create Secrets but not read them back.
    let _ = secrets.get_opt("any").await;
    let found = std::panic::catch_unwind(|| assert_allowed(&fake, LAUNCHER));
    let said = *found.unwrap_err().downcast::<String>().unwrap();
    assert!(said.contains("get secrets"), "{said}");
    // The operator may.
    assert_allowed(&fake, OPERATOR);
}
