//! The per-attempt file: what `agentpool run-task` needs to take over one claimed attempt
//! (the claim with its lease and credentials, and the worker id that holds it). In Kubernetes
//! it is the one key of the attempt's Secret, mounted read-only into the pod.

use agentpool_core::WorkerId;
use agentpool_runner::ClaimedWork;
use serde::{Deserialize, Serialize};

/// The key of the attempt Secret (and the file name where the pod sees it).
pub const ATTEMPT_KEY: &str = "attempt.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptFile {
    /// The worker that claimed the attempt; heartbeats and reports go out under its id.
    pub worker_id: WorkerId,
    pub work: ClaimedWork,
}

#[derive(Debug, thiserror::Error)]
pub enum AttemptFileError {
    #[error("cannot read the attempt file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the attempt file {path} is not valid: {source}")]
    Parse { path: String, source: serde_json::Error },
}

impl AttemptFile {
    pub fn read(path: &std::path::Path) -> Result<Self, AttemptFileError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| AttemptFileError::Read {
            path: shown.clone(),
            source,
        })?;
        // serde_json's message names a position, never the value, so no credential leaks.
        serde_json::from_slice(&bytes).map_err(|source| AttemptFileError::Parse { path: shown, source })
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain data to a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}
