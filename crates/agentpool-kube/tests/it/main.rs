//! agentpool-kube's tests: failure classification on real-shaped Kubernetes objects, the
//! launcher against the in-memory API server with every request asserted, and every object
//! the code creates (and every rendered manifest) validated against the Kubernetes schemas.

mod alerts;
mod classify;
mod cluster;
mod fake_watch;
mod launcher;
mod launcher_check;
mod launcher_progress;
mod manifests;
mod pool;
mod pool_guard;
mod pool_schema;
mod pool_state;
mod queue;
mod rbac;
mod schema;

/// A fixture from `tests/fixtures`, parsed as `T`.
pub fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
