//! The rendered manifests (`kubectl kustomize`) as a whole: in the base and every overlay the
//! launcher's Job template runs the image the Deployments run, and one `images:` edit moves
//! both; every agentpool container, init containers included, is confined alike.

use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

use crate::schema::{have, repo_root};

/// The base and every overlay, as paths under `deploy/kustomize`.
pub fn kustomizations() -> Vec<String> {
    let mut all = vec!["base".to_string()];
    let overlays = repo_root().join("deploy/kustomize/overlays");
    let mut names: Vec<String> = std::fs::read_dir(&overlays)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    all.extend(names.into_iter().map(|n| format!("overlays/{n}")));
    all
}

/// `kubectl kustomize dir`, as YAML text.
pub fn render(dir: &Path) -> String {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "{}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Whether `kubectl` is here to render with; the tests that need it pass without it.
fn have_kubectl() -> bool {
    have("kubectl", &["version", "--client"])
}

/// The base and every overlay, each with its rendered documents; none without `kubectl`.
fn rendered_kustomizations() -> Vec<(String, Vec<Value>)> {
    if !have_kubectl() {
        return Vec::new();
    }
    kustomizations()
        .into_iter()
        .map(|k| {
            let docs = documents(&render(&repo_root().join("deploy/kustomize").join(&k)));
            (k, docs)
        })
        .collect()
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// The workloads of agentpool itself (not the dev overlay's PostgreSQL).
fn workloads(docs: &[Value]) -> Vec<&Value> {
    docs.iter()
        .filter(|d| ["Deployment", "StatefulSet"].contains(&d["kind"].as_str().unwrap_or_default()))
        .filter(|d| d["metadata"]["labels"]["app.kubernetes.io/name"] == "agentpool")
        .collect()
}

/// Every container and init container of `workload`'s pod template.
fn containers(workload: &Value) -> Vec<&Value> {
    let pod = &workload["spec"]["template"]["spec"];
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| pod[k].as_array())
        .flatten()
        .collect()
}

/// The images the Deployments' containers run, and the image of the launcher's Job template.
fn images(docs: &[Value]) -> (Vec<String>, String) {
    let mut run: Vec<String> = workloads(docs)
        .into_iter()
        .flat_map(containers)
        .map(|c| c["image"].as_str().unwrap().to_string())
        .collect();
    run.sort();
    run.dedup();
    let config = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "agentpool-launcher")
        .expect("the launcher's ConfigMap");
    let json = config["data"]["launcher.json"].as_str().unwrap();
    let template: agentpool_kube::JobTemplate =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}\n{json}"));
    (run, template.image)
}

#[test]
fn the_job_template_runs_the_image_the_deployments_run() {
    for (k, docs) in rendered_kustomizations() {
        let (run, template) = images(&docs);
        assert_eq!(run.len(), 1, "{k}: one image for every container: {run:?}");
        assert_eq!(template, run[0], "{k}: the Job pods' image");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Pinning production to another tag is one edit, and the Job pods follow it.
#[test]
fn one_images_edit_moves_the_job_pods_too() {
    if !have_kubectl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo_root().join("deploy/kustomize"), dir.path());
    let file = dir.path().join("overlays/production/kustomization.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let pinned: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("newTag:"))
        .collect();
    assert_eq!(pinned.len(), 1, "one tag to edit: {pinned:?}");
    let bumped = text.replace(pinned[0], "    newTag: 9.9.9-bumped");
    std::fs::write(&file, bumped).unwrap();

    let docs = documents(&render(&dir.path().join("overlays/production")));
    let (run, template) = images(&docs);
    let want = "registry.example.com/agentpool:9.9.9-bumped";
    assert_eq!(run, vec![want.to_string()]);
    assert_eq!(template, want, "the Job template follows the one edit");
}

/// Init containers too: the server's `migrate` runs confined like the server itself.
#[test]
fn every_agentpool_container_is_confined_and_has_resources() {
    for (k, docs) in rendered_kustomizations() {
        let all = workloads(&docs);
        assert!(all.len() >= 3, "{k}: server, launcher, operator");
        for w in all {
            let pod = &w["spec"]["template"]["spec"];
            assert_eq!(
                pod["securityContext"]["runAsNonRoot"], true,
                "{k}: {}",
                w["metadata"]["name"]
            );
            for c in containers(w) {
                let at = format!("{k}: {} container {}", w["metadata"]["name"], c["name"]);
                let sc = &c["securityContext"];
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{at}");
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{at}");
                assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{at}");
                assert!(c["resources"]["requests"]["memory"].is_string(), "{at}");
                assert!(c["resources"]["limits"]["memory"].is_string(), "{at}");
            }
        }
    }
}
