//! The WorkerPool CRD and what a pool becomes, against the schemas: the committed CRD is the
//! generated one; the CRD, the StatefulSet and Service of the example pool validate against
//! the Kubernetes 1.33 schemas (`kubernetes-validate`); the example pool validates against the
//! CRD's own schema (strict: unknown fields refused), and breaks the CEL rules' checks when
//! made invalid.

use std::path::PathBuf;
use std::process::Command;

use agentpool_kube::pool::objects::{build_service, build_statefulset};
use agentpool_kube::pool::{PoolCacheStatus, ScaleDownStatus, WorkerPool, WorkerPoolStatus, crd_yaml};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use crate::schema::{have, repo_root, validate};

fn example() -> Value {
    let text = std::fs::read_to_string(repo_root().join("deploy/examples/workerpool.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

#[test]
fn the_committed_crd_is_the_generated_one() {
    let path = repo_root().join("deploy/kustomize/base/workerpool-crd.yaml");
    let committed = std::fs::read_to_string(&path).unwrap();
    assert!(
        committed == crd_yaml(),
        "{} is stale: regenerate it with `agentpool crd > {}`",
        path.display(),
        "deploy/kustomize/base/workerpool-crd.yaml"
    );
    let crd: Value = serde_yaml::from_str(&committed).unwrap();
    let text = committed.to_string();
    assert!(text.contains("rule: has(self.replicas) != has(self.autoscale)"));
    assert!(text.contains("rule: self.min <= self.max"));
    assert_eq!(crd["spec"]["versions"][0]["subresources"]["status"], json!({}));
    // `kubectl get wp -o wide` shows the unhealthy workers beside the cache.
    let columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let unhealthy = columns
        .iter()
        .find(|c| c["name"] == "Unhealthy")
        .expect("an Unhealthy column");
    assert_eq!(unhealthy["jsonPath"], ".status.unhealthyWorkers");
    assert_eq!(unhealthy["priority"], 1);
}

#[test]
fn the_crd_and_a_pools_objects_validate_against_the_kubernetes_schemas() {
    if !have("kubernetes-validate", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut pool: WorkerPool = serde_json::from_value(example()).unwrap();
    pool.metadata.namespace = Some("agentpool".into());
    pool.metadata.uid = Some("5d1c2f9e-3a1b-4c7d-9e2f-6a8b0c1d2e3f".into());
    pool.spec.ca_secret = Some(agentpool_kube::pool::crd::SecretKeyRef {
        name: "agentpool-ca".into(),
        key: "ca.crt".into(),
    });
    let files: Vec<PathBuf> = vec![
        dir.path().join("crd.yaml"),
        dir.path().join("statefulset.json"),
        dir.path().join("service.json"),
    ];
    std::fs::write(&files[0], crd_yaml()).unwrap();
    std::fs::write(
        &files[1],
        serde_json::to_vec(&build_statefulset(&pool, 3)).unwrap(),
    )
    .unwrap();
    std::fs::write(&files[2], serde_json::to_vec(&build_service(&pool)).unwrap()).unwrap();
    validate(&files);
}

/// Validate `object` against the CRD's openAPIV3Schema with the jsonschema package
/// (installed with kubernetes-validate), refusing unknown fields as the API server prunes them.
fn against_crd(object: &Value) -> Result<(), String> {
    let crd: Value = serde_yaml::from_str(&crd_yaml()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let dir = tempfile::tempdir().unwrap();
    let (s, o) = (dir.path().join("schema.json"), dir.path().join("object.json"));
    std::fs::write(&s, schema.to_string()).unwrap();
    std::fs::write(&o, object.to_string()).unwrap();
    let script = r#"
import json, sys, jsonschema
def strict(n):
    if isinstance(n, dict):
        if n.get("type") == "object" and "properties" in n and "additionalProperties" not in n \
                and not n.get("x-kubernetes-preserve-unknown-fields"):
            n["additionalProperties"] = False
        for v in n.values(): strict(v)
    elif isinstance(n, list):
        for v in n: strict(v)
schema = json.load(open(sys.argv[1])); strict(schema)
obj = json.load(open(sys.argv[2]))
# apiVersion, kind and metadata are checked by the API server itself, not by the CRD's schema.
for k in ("apiVersion", "kind", "metadata"): obj.pop(k, None)
errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in jsonschema.Draft202012Validator(schema).iter_errors(obj)]
print("\n".join(errors)); sys.exit(1 if errors else 0)
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&s)
        .arg(&o)
        .output()
        .expect("run python3");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn the_example_pool_validates_against_the_crd_schema() {
    if !have("kubernetes-validate", &["--version"]) {
        return;
    }
    let ex = example();
    against_crd(&ex).unwrap();
    let pool: WorkerPool = serde_json::from_value(ex.clone()).unwrap();
    pool.spec.check().unwrap();

    // A status as the operator writes it, with the pool's caches and a scale-down underway.
    let status = WorkerPoolStatus {
        replicas: 3,
        desired_replicas: 1,
        queued_tasks: 12,
        runnable_tasks: Some(1),
        cache: Some(PoolCacheStatus {
            hits: 41,
            misses: 3,
            hit_rate: Some(0.932),
            bytes: 734_003_200,
            mirrors: 3,
            workers: 3,
        }),
        scale_down: Some(ScaleDownStatus {
            below_since: Some(Time(chrono::Utc::now())),
            drained: vec!["agents-2".into()],
        }),
        ..WorkerPoolStatus::default()
    };
    let mut with_status = ex.clone();
    with_status["status"] = serde_json::to_value(&status).unwrap();
    against_crd(&with_status).unwrap();

    // The validator is not a no-op: a wrong type and an unknown field are refused.
    let mut bad = ex.clone();
    bad["spec"]["slotsPerPod"] = json!("two");
    let e = against_crd(&bad).unwrap_err();
    assert!(e.contains("slotsPerPod"), "{e}");
    let mut bad = ex.clone();
    bad["spec"]["replica"] = json!(2);
    assert!(against_crd(&bad).is_err());

    // What the CEL rules refuse, the operator's own check refuses too.
    let mut both = ex.clone();
    both["spec"]["replicas"] = json!(2);
    let p: WorkerPool = serde_json::from_value(both).unwrap();
    assert!(p.spec.check().unwrap_err().contains("exactly one"));
    let mut inverted = ex;
    inverted["spec"]["autoscale"] = json!({"min": 5, "max": 2});
    let p: WorkerPool = serde_json::from_value(inverted).unwrap();
    assert!(p.spec.check().unwrap_err().contains("min"));
}
