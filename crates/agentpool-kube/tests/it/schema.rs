//! Every object the launcher creates, and every rendered manifest under deploy/, validated
//! against the Kubernetes 1.33 OpenAPI schemas with `kubernetes-validate` (pip). Missing tools
//! fail the test when services are required (CI); elsewhere the test says so and passes.

use std::path::{Path, PathBuf};
use std::process::Command;

use agentpool_core::WorkerId;
use agentpool_kube::KUBERNETES_VERSION;
use agentpool_kube::job::{build_check_job, build_job, build_secret, check_job_name};

use crate::launcher::template;
use crate::queue::work;

fn required() -> bool {
    std::env::var_os("AGENTPOOL_TEST_REQUIRE_SERVICES").is_some()
}

/// Whether `tool` runs; panics when it does not and tools are required.
pub fn have(tool: &str, args: &[&str]) -> bool {
    let ok = Command::new(tool)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !required(),
            "{tool} is required (scripts/test installs it); it did not run"
        );
        eprintln!("skipping: {tool} is not installed");
    }
    ok
}

pub fn validate(files: &[PathBuf]) {
    let out = Command::new("kubernetes-validate")
        .args([
            "--strict",
            "--kubernetes-version",
            &format!("{KUBERNETES_VERSION}.0"),
        ])
        .args(files)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schema validation failed:\n{text}");
    // Each line names the file it is about, and a fixture's name may hold "error".
    let errors = text
        .lines()
        .any(|l| l.trim_start().to_lowercase().starts_with("error"));
    assert!(!errors, "{text}");
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn created_objects_validate_against_the_kubernetes_schemas() {
    if !have("kubernetes-validate", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut t = template();
    t.resources = Some(
        serde_json::from_value(serde_json::json!({
            "requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "4Gi"}
        }))
        .unwrap(),
    );
    t.node_selector
        .insert("agentpool.dev/pool".into(), "agents".into());
    t.tolerations = vec![
        serde_json::from_value(serde_json::json!({
            "key": "dedicated", "operator": "Equal", "value": "agents", "effect": "NoSchedule"
        }))
        .unwrap(),
    ];
    t.ca_secret = Some(agentpool_kube::SecretKeyRef {
        name: "agentpool-ca".into(),
        key: "ca.crt".into(),
    });
    let w = work(3);
    let id = WorkerId::parse("agentpool-launcher").unwrap();
    let job = build_job(&t, &id, &w);
    let secret = build_secret(&id, &w, "5d1c2f9e-3a1b-4c7d-9e2f-6a8b0c1d2e3f");
    let check = build_check_job(
        &t,
        &id,
        &["claude-code".into(), "codex".into()],
        &check_job_name(&id, chrono::Utc::now()),
    );
    let files = vec![
        dir.path().join("job.json"),
        dir.path().join("secret.json"),
        dir.path().join("check.json"),
    ];
    std::fs::write(&files[0], serde_json::to_vec(&job).unwrap()).unwrap();
    std::fs::write(&files[1], serde_json::to_vec(&secret).unwrap()).unwrap();
    std::fs::write(&files[2], serde_json::to_vec(&check).unwrap()).unwrap();
    validate(&files);
}

#[test]
fn rendered_manifests_validate_against_the_kubernetes_schemas() {
    if !have("kubernetes-validate", &["--version"]) || !have("kubectl", &["version", "--client"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let all = crate::manifests::kustomizations();
    assert!(all.len() >= 3, "the base, dev and production: {all:?}");
    for overlay in &all {
        let text = crate::manifests::render(&repo_root().join("deploy/kustomize").join(overlay));
        let file = dir.path().join(format!("{}.yaml", overlay.replace('/', "-")));
        std::fs::write(&file, &text).unwrap();
        for kind in [
            "Deployment",
            "Service",
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "ConfigMap",
        ] {
            assert!(
                text.contains(&format!("kind: {kind}\n")),
                "{overlay} has no {kind}"
            );
        }
        if overlay == "overlays/production" {
            // Every service logs JSON lines there (the server's migrate step too), for the
            // cluster's log collector: one setting per Deployment and per init container.
            let containers =
                text.matches("kind: Deployment\n").count() + text.matches("initContainers:\n").count();
            assert_eq!(
                text.matches("name: AGENTPOOL_LOG_FORMAT\n").count(),
                containers,
                "{text}"
            );
        }
        files.push(file);
    }
    validate(&files);
}

/// The pods where agents and task commands run share their process namespace, so that the
/// pause container, as PID 1, reaps the orphans they leave (the image has no init).
#[test]
fn pods_that_run_agents_and_commands_reap_orphans() {
    let id = WorkerId::parse("agentpool-launcher").unwrap();
    let job = build_job(&template(), &id, &work(1));
    let check = build_check_job(&template(), &id, &[], "agentpool-check-0");
    let pool: agentpool_kube::pool::WorkerPool =
        serde_json::from_value(crate::pool::pool_json(serde_json::json!({"replicas": 1}))).unwrap();
    let set = agentpool_kube::pool::objects::build_statefulset(&pool, 1);
    let pods = [
        job.spec.unwrap().template.spec.unwrap(),
        check.spec.unwrap().template.spec.unwrap(),
        set.spec.unwrap().template.spec.unwrap(),
    ];
    for pod in pods {
        assert_eq!(
            pod.share_process_namespace,
            Some(true),
            "{:?}",
            pod.containers[0].args
        );
        assert_eq!(pod.containers.len(), 1, "no other container's processes to see");
    }
}

/// The Job templates shipped in the manifests parse as the launcher reads them.
#[test]
fn shipped_job_templates_parse() {
    for file in [
        "deploy/kustomize/base/configmap.yaml",
        "deploy/kustomize/overlays/production/kustomization.yaml",
    ] {
        let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
        let mut lines = text.lines().skip_while(|l| !l.trim_end().ends_with("|"));
        let head = lines.next().unwrap_or_else(|| panic!("{file}: no block"));
        let indent = head.len() - head.trim_start().len();
        let body: Vec<&str> = lines
            .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
            .collect();
        let json = body.join("\n");
        let t: agentpool_kube::JobTemplate =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{file}: {e}\n{json}"));
        assert_eq!(t.token_secret.name, "agentpool-worker-token", "{file}");
        if file.contains("production") {
            // The Job pods log JSON lines too, as the services there do.
            let json_logs = t
                .env
                .iter()
                .any(|e| e.name == "AGENTPOOL_LOG_FORMAT" && e.value.as_deref() == Some("json"));
            assert!(json_logs, "{file}: {:?}", t.env);
        }
    }
}

/// The validator is not a no-op: a Job with a wrongly typed field is refused.
#[test]
fn the_validator_refuses_an_invalid_job() {
    if !have("kubernetes-validate", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.json");
    let mut job =
        serde_json::to_value(build_job(&template(), &WorkerId::parse("l").unwrap(), &work(1))).unwrap();
    job["spec"]["backoffLimit"] = serde_json::json!("none");
    std::fs::write(&file, job.to_string()).unwrap();
    let out = Command::new("kubernetes-validate")
        .args([
            "--strict",
            "--kubernetes-version",
            &format!("{KUBERNETES_VERSION}.0"),
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// The Jobs, pods and events the tests give the code are shaped as Kubernetes reports them.
#[test]
fn the_job_pod_and_event_fixtures_validate_against_the_kubernetes_schemas() {
    if !have("kubernetes-validate", &["--version"]) {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            ["job-", "pod-", "event-"].iter().any(|k| name.starts_with(k)) && name.ends_with(".json")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 17, "{files:?}");
    validate(&files);
}
