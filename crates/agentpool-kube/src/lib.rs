//! agentpool on Kubernetes: the WorkerPool operator (persistent warm workers scaled on queue
//! depth, [`pool`]) and the launcher — a worker that claims attempts through the worker
//! protocol and runs each as one Job whose pod runs `agentpool run-task` — the objects it
//! creates, and how Job and pod state become task outcomes. Objects are written against the
//! Kubernetes 1.33 API (`k8s-openapi` feature `v1_33`).

// The product's code returns and reports its failures; only its tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod attempt_file;
pub mod classify;
#[cfg(feature = "fake-api")]
pub mod fake;
pub mod job;
pub mod launcher;
mod pod_events;
pub mod pool;

pub use attempt_file::AttemptFile;
pub use job::{JobTemplate, SecretKeyRef, job_name};
pub use launcher::{LauncherConfig, LauncherError, run_launcher};

/// The Kubernetes API version the objects are written and validated against.
pub const KUBERNETES_VERSION: &str = "1.33";
